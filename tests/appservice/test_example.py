"""examples/app-service end to end with the real CLI and `--simulate`: uv installs the quickstart's
scikit-learn for the Linux platform into the package, Kudu receives the zip, and the simulated web
app runs it with the zip's own site-packages."""

from __future__ import annotations

import pytest

from tests.aci.test_example import round_trip
from tests.conftest import REPO

pytest.importorskip("azure.mgmt.web", reason="the Azure SDKs are not installed (pip install 'deployctl[azure]')")


@pytest.mark.slow
def test_app_service_example_applies_scores_replans_clean_and_destroys(tmp_path):
    applied = round_trip(str(REPO / "examples" / "app-service" / "deployctl.yaml"), tmp_path)
    assert "https://iris-app-prod.azurewebsites.net/score" in applied and "smoke test: passed" in applied
