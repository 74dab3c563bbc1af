"""The baseline: a minimal FastAPI + onnxruntime JSON endpoint, no auth, no validation.

MODEL_PATH names the .onnx file. POST /predict {"input_data": {name: nested list}} -> outputs.
"""

import os

import numpy as np
import onnxruntime as ort
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

options = ort.SessionOptions()
options.intra_op_num_threads = int(os.environ.get("ORT_INTRA_OP_THREADS", "1"))
options.inter_op_num_threads = 1
session = ort.InferenceSession(os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"])
input_types = {i.name: np.float32 if i.type == "tensor(float)" else np.int64 for i in session.get_inputs()}
output_names = [o.name for o in session.get_outputs()]

app = FastAPI()


@app.get("/health")
def health():
    return {"ok": True}


@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    feeds = {name: np.asarray(value, dtype=input_types[name]) for name, value in body["input_data"].items()}
    values = session.run(None, feeds)
    outputs = {n: v.tolist() for n, v in zip(output_names, values, strict=True)}
    return Response(orjson.dumps({"output_data": outputs}), media_type="application/json")
