"""Scoring script, written the way Azure ML's own samples write it (runs unmodified there)."""

import json
import logging
import os

import joblib

model = None


def init():
    """Called once per worker process, before any request: load the model here (not per call)."""
    global model
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model", "model.pkl")
    model = joblib.load(model_path)
    logging.info("model loaded from %s", model_path)


def run(raw_data):
    """Called per request with the request body (a JSON string): {"data": [[f1, f2, f3, f4], ...]}."""
    data = json.loads(raw_data)["data"]
    return model.predict(data).tolist()
