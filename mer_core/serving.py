"""`mer serve`: a model behind HTTP. POST a video file's bytes to `/predict` and get back
what `mer predict` prints for it; `/health` says the model is loaded and which classes it
knows. The same alignment, windows and summary as `mer predict`: one code path."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mer_core import MerError
from mer_core.inference import ClipPredictor, predict_video_bytes

MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def create_app(predictor: ClipPredictor) -> FastAPI:
    """The HTTP app over one loaded predictor (a registered model or a `final.pt`)."""
    app = FastAPI(title="mer", summary="Micro-expression recognition over a face video")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": predictor.name, "classes": predictor.classes,
                "trained_on": predictor.trained_on}

    @app.post("/predict")
    async def predict(request: Request, window: float = 0.4, stride: float = 0.1, fps: float | None = None,
                      name: str = "upload"):
        """The request body is the video file (`curl --data-binary @face.mp4`); query
        parameters as `mer predict`'s options. A video without a face, or bytes that are no
        video, answer 422 with a one-line `error`."""
        data = await request.body()
        if len(data) > MAX_UPLOAD_BYTES:
            return JSONResponse({"error": f"upload of {len(data)} bytes exceeds {MAX_UPLOAD_BYTES}"}, status_code=413)
        if not (window > 0 and stride > 0 and (fps is None or fps > 0)):
            return JSONResponse({"error": "window, stride and fps must be positive"}, status_code=422)
        try:
            result = await run_in_threadpool(predict_video_bytes, data, predictor, name, window_s=window,
                                             stride_s=stride, fps=fps)
        except (MerError, ValueError, LookupError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return result.as_json()

    return app
