"""docs/configuration.md is generated from the settings model: it must not drift from it."""

from __future__ import annotations

import pytest

from common.settings import Settings
from scripts import configuration_doc


def test_configuration_doc_is_up_to_date():
    assert configuration_doc.DOC.read_text() == configuration_doc.document(), (
        "docs/configuration.md differs from common/settings.py: run "
        "`python -m scripts.configuration_doc` and commit the result")


def test_every_setting_has_a_row():
    table = "\n".join(configuration_doc.settings_table())
    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in table


def test_a_setting_without_a_row_fails_the_generator(monkeypatch):
    monkeypatch.setattr(configuration_doc, "ROWS", configuration_doc.ROWS[:-1])
    with pytest.raises(ValueError, match="undescribed settings"):
        configuration_doc.settings_table()


def test_defaults_are_spelt_as_environment_values():
    assert configuration_doc.default_of("job_retry_delays") == "`1,5,25`"
    assert configuration_doc.default_of("drain_seconds") == "`5`"
