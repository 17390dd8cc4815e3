"""A scoring script in Azure ML's init()/run() contract, with no third-party packages: a linear
classifier whose weights are the model file.  Runs unmodified on every deployctl target."""

import json
import os

weights = None


def init():
    """Once per worker: load the model."""
    global weights
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "weights.json")) as f:
        weights = json.load(f)
    print(f"model loaded: {len(weights['classes'])} classes")  # shows in `deployctl logs`


def run(raw_data):
    """{"data": [[f1, f2, f3, f4], ...]} -> one class name per row."""
    rows = json.loads(raw_data)["data"]
    out = []
    for row in rows:
        scores = [sum(c * x for c, x in zip(coef, row)) + b for coef, b in zip(weights["coef"], weights["intercept"])]
        out.append(weights["classes"][scores.index(max(scores))])
    return out
