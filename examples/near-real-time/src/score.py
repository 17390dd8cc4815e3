"""Near-real-time scoring: the same Azure ML contract; each queued request is one run() call."""

import json
import os

import joblib

model = None


def init():
    global model
    model = joblib.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model", "model.pkl"))


def run(raw_data):
    rows = json.loads(raw_data)["data"]
    probabilities = model.predict_proba(rows)
    return [{"class": int(p.argmax()), "confidence": round(float(p.max()), 4)} for p in probabilities]
