"""The key's reverse relation gets a name, through which access reads a key's use (its revoke
page) without importing this app. State only: no SQL."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('access', '0001_initial'),
        ('inference', '0003_history_lz4'),
    ]

    operations = [
        migrations.AlterField(
            model_name='prediction',
            name='api_key',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='predictions', to='access.apikey'),
        ),
    ]
