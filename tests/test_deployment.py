"""Deployment files: the compose file validates, the image runs as non-root with a /readyz healthcheck."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_compose_file_validates(tmp_path):
    exe = shutil.which("docker-compose")
    if not exe:
        pytest.skip("needs docker-compose (Debian package; `make test` installs it where apt can)")
    r = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    broken = tmp_path / "broken-compose.yml"
    broken.write_text("services:\n  resynth:\n    ports: 8000\n    healthcheck: yes\n")
    r = subprocess.run([exe, "-f", str(broken), "config", "-q"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0  # the validator really validates


def test_compose_service_shape():
    svc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["resynth"]
    assert "/readyz" in " ".join(svc["healthcheck"]["test"])
    assert not str(svc["user"]).startswith("0")
    assert any(v.endswith(":ro") for v in svc["volumes"])
    env = svc["environment"]  # audits confined to the mounted media, their database on a volume
    assert any(v.startswith(env["RESYNTH_AUDIT_ROOT"] + ":") or f":{env['RESYNTH_AUDIT_ROOT']}:" in v
               for v in svc["volumes"])
    db_dir = env["RESYNTH_AUDIT_DB"].rsplit("/", 1)[0]
    assert any(v.endswith(":" + db_dir) for v in svc["volumes"])


def test_dockerfile_matches_readme_setup():
    text = (ROOT / "Dockerfile").read_text()
    assert "RUN make setup" in text and "make setup" in (ROOT / "README.md").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "/readyz" in text and 'CMD ["/app/.venv/bin/resynth", "serve"]' in text


def test_compose_ray_profile_shape_and_validates():
    """`docker compose --profile ray`: a head, workers built from the same image with the ray extra, the media at
    the same path on every node, PostgreSQL for the database (README, "Audits on a Ray cluster")."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    head, worker, pg = services["ray-head"], services["ray-worker"], services["postgres"]
    assert all(s["profiles"] == ["ray"] for s in (head, worker, pg)) and "profiles" not in services["resynth"]
    assert head["build"]["args"]["EXTRAS"] == "ray" and worker["image"] == head["image"]
    assert "--head" in head["command"] and "ray-head:6379" in worker["command"]
    mounts = lambda s: {v.split(":")[1] for v in s["volumes"]}  # noqa: E731
    assert "/data/media" in mounts(head) & mounts(worker)
    assert not str(head["user"]).startswith("0") and not str(worker["user"]).startswith("0")
    assert "ARG EXTRAS" in (ROOT / "Dockerfile").read_text()
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("needs docker-compose (Debian package; `make test` installs it where apt can)")
    r = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "--profile", "ray", "config", "-q"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
