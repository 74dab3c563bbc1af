"""manage.py create_api_key --name NAME --scopes read,predict,manage [--expires-days N]"""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from access.models import ALL_SCOPES
from access.services import KeyNameTaken, api_key_create


class Command(BaseCommand):
    help = "Create an API key and print it. The key is shown only this once; it is stored hashed."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="A unique label for the key (who or what uses it).")
        parser.add_argument(
            "--scopes", default="read", help=f"Comma-separated scopes from: {', '.join(ALL_SCOPES)}. Default: read."
        )
        parser.add_argument("--expires-days", type=int, default=None, help="Expire the key after N days.")

    def handle(self, *args, name, scopes, expires_days, **options):
        wanted = [scope.strip() for scope in scopes.split(",") if scope.strip()]
        if expires_days is not None and expires_days <= 0:
            raise CommandError("--expires-days must be a positive number of days.")
        expiry = timezone.now() + timedelta(days=expires_days) if expires_days else None
        try:
            api_key, raw = api_key_create(name=name, scopes=wanted, expiry_date=expiry)
        except (ValueError, KeyNameTaken) as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(
            f"Created API key '{api_key.name}' (prefix {api_key.prefix}) with scopes {', '.join(api_key.scopes)}"
            + (f", expiring {expiry:%Y-%m-%d %H:%M} UTC" if expiry else "")
            + ". Store it now: it cannot be shown again."
        )
        self.stdout.write(raw)
