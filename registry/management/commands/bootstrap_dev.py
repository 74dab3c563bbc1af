"""Development set-up for `make run`: demo model, admin user, an API key, the URLs. Re-runnable."""

from __future__ import annotations

import io

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from access.models import ALL_SCOPES, APIKey
from access.services import api_key_create
from registry import services
from registry.demo import DEMO_NAME, DEMO_VERSION, build_iris_onnx
from registry.models import MLModel

DEV_ADMIN = ("admin", "admin")


class Command(BaseCommand):
    help = "Register the demo model, a development admin user and API key (DEBUG only)."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Where the server will listen.")

    def handle(self, *args, url, **options):
        if not settings.DEBUG:
            raise CommandError("bootstrap_dev creates a well-known admin password: it runs only with DEBUG on.")

        model = MLModel.objects.filter(name=DEMO_NAME, version=DEMO_VERSION).first()
        if model is None:
            staged = services.stage_stream(io.BytesIO(build_iris_onnx()))
            model = services.model_register(
                name=DEMO_NAME,
                version=DEMO_VERSION,
                staged=staged,
                description="Demo: iris species from 4 measurements (scikit-learn logistic regression).",
                tags=["demo"],
                inline=True,  # a command holds no serving thread: the demo is ready when it returns
            )
        user_model = get_user_model()
        if not user_model.objects.filter(username=DEV_ADMIN[0]).exists():
            user_model.objects.create_superuser(DEV_ADMIN[0], "admin@localhost", DEV_ADMIN[1])

        key = self._dev_key()
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"ModelForge (development) at {url}",
                    f"  demo model   {model.name} {model.version}: {model.status} (id {model.pk})",
                    f"  admin        {url}/admin/   user {DEV_ADMIN[0]} / password {DEV_ADMIN[1]}",
                    f"  API docs     {url}/api/v1/docs",
                    f"  API key      {key}   (scopes {', '.join(ALL_SCOPES)}; saved in var/dev-api-key)",
                    f"  try          curl -H 'Authorization: Bearer {key}' {url}/api/v1/models",
                    "",
                ]
            )
        )

    def _dev_key(self) -> str:
        """Reuse the key saved by an earlier run while it still works; else make a new one."""
        path = settings.VAR_DIR / "dev-api-key"
        if path.exists():
            raw = path.read_text().strip()
            existing = APIKey.objects.filter(prefix=raw.partition(".")[0]).first()
            if existing and existing.is_valid(raw) and not existing.revoked and not existing.has_expired:
                return raw
        # Key names are unique: a key from an earlier run whose file was lost keeps its name.
        name = "development"
        if APIKey.objects.filter(name__iexact=name).exists():
            name = f"development-{timezone.now():%Y%m%d-%H%M%S}"
        _, raw = api_key_create(name=name, scopes=list(ALL_SCOPES))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(raw + "\n")
        path.chmod(0o600)
        return raw
