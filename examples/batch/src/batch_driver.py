"""Batch driver, written the way Azure ML's batch deployment samples write it."""

import os

import joblib
import pandas as pd

model = None


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "model.pkl"))


def run(mini_batch):
    """mini_batch: a list of CSV file paths. Returns one row per input row: file, row, prediction."""
    results = []
    for path in mini_batch:
        data = pd.read_csv(path)
        predictions = model.predict(data[["sepal_length", "sepal_width", "petal_length", "petal_width"]].values)
        results.append(pd.DataFrame({"file": os.path.basename(path), "row": range(len(data)), "prediction": predictions}))
    return pd.concat(results)
