import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.settings import Settings, settings_from_env
from detector.components.evidence import REASONS


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


GOOD = _png(np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8))


@pytest.fixture
def client(tiny_detector):
    settings = Settings(max_bytes=20_000, max_pixels=100_000, max_inflight=2, torch_threads=1)  # audits off
    app = create_app(settings, loader=lambda s: tiny_detector[1])
    with TestClient(app) as c:  # runs the lifespan
        yield c


def _err(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message"} and body["code"] == code
    return body


def test_health_ready_model(client, tiny_detector):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["model_id"] == tiny_detector[1].model_id
    info = client.get("/v1/model").json()
    assert info["resolution"] == 16 and info["perceptual"] == "mobilenet_v2-random@32"
    assert "threshold" in info and "metrics" in info


def test_not_ready_without_lifespan(tiny_detector):
    app = create_app(Settings(), loader=lambda s: tiny_detector[1])
    c = TestClient(app)  # no context manager: lifespan not run, model not loaded
    _err(c.get("/readyz"), 503, "not_ready")
    _err(c.post("/v1/detect", content=GOOD, headers={"content-type": "image/png"}), 503, "not_ready")
    assert c.get("/healthz").status_code == 200


def test_detect_multipart_and_raw(client):
    r = client.post("/v1/detect", files={"file": ("a.png", GOOD, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 <= body["p_fake"] <= 1 and body["verdict"] in ("real", "fake") and body["evidence"] is None
    t = body["timings_ms"]
    assert {"decode", "encode", "refine", "features", "classify"} <= set(t) and body["warnings"] == []
    assert t["total"] == pytest.approx(sum(v for k, v in t.items() if k != "total"), abs=0.05)
    # the evidence that drove the verdict: named when it is 'fake', with both tail probabilities
    assert set(body["tail_probabilities"]) == {"generator", "photos", "probe", "artifacts"}
    assert bool(body["reasons"]) == (body["verdict"] == "fake")
    assert set(body["reasons"]) <= set(REASONS.values())
    raw = client.post("/v1/detect?explain=true", content=GOOD, headers={"content-type": "image/png"})
    assert raw.status_code == 200 and raw.json()["p_fake"] == pytest.approx(body["p_fake"])
    ev = raw.json()["evidence"]
    for name in ("input", "reconstruction", "pixel_heatmap", "perceptual_heatmap"):
        assert Image.open(io.BytesIO(base64.b64decode(ev[name]))).format == "PNG"


def test_every_bad_input_class_then_still_serving(client):
    big = b"\x89PNG" + b"0" * 30_000
    _err(client.post("/v1/detect", content=big, headers={"content-type": "image/png"}), 413, "payload_too_large")

    def chunks():  # no content-length: the limit is enforced while streaming
        for _ in range(30):
            yield b"x" * 1000

    _err(client.post("/v1/detect", content=chunks(), headers={"content-type": "image/png"}), 413,
         "payload_too_large")
    _err(client.post("/v1/detect", files={"file": ("big.png", big, "image/png")}), 413, "payload_too_large")
    bomb = _png(np.zeros((400, 400), dtype=np.uint8))  # 160,000 pixels > 100,000, tiny file
    _err(client.post("/v1/detect", content=bomb, headers={"content-type": "image/png"}), 413, "image_too_large")
    _err(client.post("/v1/detect", content=b"hello", headers={"content-type": "text/plain"}), 415,
         "unsupported_media_type")
    _err(client.post("/v1/detect", files={"file": ("x.pdf", b"%PDF-1.4 ...", "application/pdf")}), 415,
         "unsupported_media_type")
    _err(client.post("/v1/detect", content=b"", headers={"content-type": "image/png"}), 422, "empty_body")
    _err(client.post("/v1/detect", content=GOOD[: len(GOOD) // 2], headers={"content-type": "image/png"}), 422,
         "corrupt_image")
    _err(client.post("/v1/detect", data={"other": "x"}, files={"nope": ("a.png", GOOD, "image/png")}), 422,
         "missing_file")
    _err(client.post("/v1/detect?explain=maybe", content=GOOD, headers={"content-type": "image/png"}), 422,
         "invalid_request")
    _err(client.get("/nowhere"), 404, "not_found")
    assert client.post("/v1/detect", content=GOOD, headers={"content-type": "image/png"}).status_code == 200


def test_overload_gives_503_with_retry_after(client):
    cap = client.app.state.capacity
    holders = [object() for _ in range(client.app.state.settings.max_inflight)]
    for h in holders:  # all scoring slots taken
        client.portal.call(cap.acquire_on_behalf_of_nowait, h)
    r = client.post("/v1/detect", content=GOOD, headers={"content-type": "image/png"})
    _err(r, 503, "overloaded")
    assert r.headers["retry-after"] == "2"
    for h in holders:
        client.portal.call(cap.release_on_behalf_of, h)
    assert client.post("/v1/detect", content=GOOD, headers={"content-type": "image/png"}).status_code == 200


def test_metrics(client):
    client.post("/v1/detect", content=GOOD, headers={"content-type": "image/png"})
    client.post("/v1/detect", content=b"", headers={"content-type": "image/png"})
    text = client.get("/metrics").text
    assert 'resynth_requests_total{method="POST",route="/v1/detect",status="200"} 1.0' in text
    assert 'resynth_requests_total{method="POST",route="/v1/detect",status="422"} 1.0' in text
    assert "resynth_request_latency_seconds_bucket" in text and "resynth_inflight_requests 0.0" in text
    assert "resynth_images_scored_total" in text


def test_openapi_declares_errors(client):
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/v1/detect"]["post"]["responses"]
    assert {"200", "413", "415", "422", "503"} <= set(responses)
    assert "ErrorBody" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_web_page(client):
    r = client.get("/")
    assert r.status_code == 200 and 'id="file"' in r.text and "/v1/detect?explain=true" in r.text
    assert 'id="reasons"' in r.text and "body.reasons" in r.text and 'id="degradation"' in r.text


def test_settings_from_env():
    s = settings_from_env({"RESYNTH_PORT": "9001", "RESYNTH_MAX_INFLIGHT": "3", "RESYNTH_DEVICE": "cpu"})
    assert (s.port, s.max_inflight, s.device, s.host) == (9001, 3, "cpu", "127.0.0.1")
    with pytest.raises(ValueError, match="RESYNTH_PORT"):
        settings_from_env({"RESYNTH_PORT": "eighty"})
    with pytest.raises(ValueError, match="positive"):
        settings_from_env({"RESYNTH_MAX_INFLIGHT": "0"})
    assert settings_from_env({}).runtime == "auto"
    assert settings_from_env({"RESYNTH_ONNX_CACHE": "none"}).onnx_cache == "none"
    with pytest.raises(ValueError, match="RESYNTH_RUNTIME='openvino' must be one of torch, onnx, auto"):
        settings_from_env({"RESYNTH_RUNTIME": "openvino"})


def test_scoring_leaves_a_core_to_the_service_unless_told():
    from api.settings import scoring_threads

    assert [scoring_threads(Settings(), cpus=c) for c in (1, 2, 16)] == [1, 1, 15]
    assert scoring_threads(settings_from_env({"RESYNTH_TORCH_THREADS": "2"}), cpus=2) == 2


def test_the_guard_knows_every_plain_route():
    """Requests refused before routing (413, 408, a client gone) are counted under their route's path, included
    routers too."""
    from api.app import create_app, plain_paths
    from api.settings import Settings

    app = create_app(Settings(), loader=lambda s: None)
    assert {"/v1/detect", "/v1/model", "/v1/audits", "/healthz", "/readyz", "/metrics"} <= plain_paths(app.routes)


def test_the_schema_says_what_the_service_does(tiny_detector):
    """The JSON report is an object, and an upload must not be empty (the service answers an empty one with 422)."""
    from api.app import create_app
    from api.settings import Settings

    schema = create_app(Settings(), loader=lambda s: tiny_detector[1]).openapi()
    report = schema["paths"]["/v1/audits/{audit_id}/report"]["get"]["responses"]["200"]["content"]
    assert report["application/json"]["schema"]["type"] == "object"
    assert report["text/csv"]["schema"]["type"] == "string"
    body = schema["paths"]["/v1/detect"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["file"]["minLength"] == 1
    assert body["image/*"]["schema"]["minLength"] == 1
