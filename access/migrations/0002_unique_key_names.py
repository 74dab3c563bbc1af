# API key names become unique, letter case aside (access.models.APIKey.name).
#
# Keys that already share a name are kept, none is revoked: the oldest keeps the name, each
# later one is renamed "<name>-<prefix>" (its prefix is unique and is what its holder sees at the
# start of the key), cut to the 50 characters a name may have. Each rename is printed, so the
# operator who runs `migrate` knows which keys changed name. The history and audit rows already
# written keep the label they were written with.

import sys

import django.db.models.functions.text
from django.db import migrations, models

NAME_MAX = 50


def rename_duplicates(apps, schema_editor):
    APIKey = apps.get_model("access", "APIKey")
    taken = set()
    renames = []
    for key in APIKey.objects.order_by("created", "prefix").only("pk", "name", "prefix", "created"):
        if key.name.lower() not in taken:
            taken.add(key.name.lower())
            continue
        suffix = f"-{key.prefix}"
        new_name = key.name[: NAME_MAX - len(suffix)] + suffix
        counter = 1
        while new_name.lower() in taken:  # only if someone already named a key like this
            counter += 1
            tail = f"-{key.prefix}-{counter}"
            new_name = key.name[: NAME_MAX - len(tail)] + tail
        taken.add(new_name.lower())
        renames.append((key.pk, key.name, new_name))
    for pk, old_name, new_name in renames:
        APIKey.objects.filter(pk=pk).update(name=new_name)
        sys.stdout.write(f"\n  API key {old_name!r} renamed {new_name!r}: another key already had that name.")


class Migration(migrations.Migration):

    dependencies = [
        ('access', '0001_initial'),
    ]

    operations = [
        migrations.RunPython(rename_duplicates, migrations.RunPython.noop, elidable=False),
        migrations.AlterField(
            model_name='apikey',
            name='name',
            field=models.CharField(help_text='Who or what uses the key, e.g. billing-svc; 1-50 characters. Unique (letter case aside): the name stands for the key in logs, the prediction history and the audit trails (key:<name>).', max_length=50),
        ),
        migrations.AddConstraint(
            model_name='apikey',
            constraint=models.UniqueConstraint(django.db.models.functions.text.Lower('name'), name='apikey_name_unique', violation_error_message='An API key with this name already exists; choose another name.'),
        ),
    ]
