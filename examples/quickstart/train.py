"""Train the quickstart's model: a logistic regression on the iris data set (ships with scikit-learn).

    python train.py     # writes model/model.pkl; needs scikit-learn==1.9.1 (requirements.txt)

The pickled model is committed so the quickstart runs without training; the environment pins the
same scikit-learn version, because a pickle is only safe to load with the version that wrote it.
"""

from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=1000).fit(X, y)
out = Path(__file__).parent / "model" / "model.pkl"
joblib.dump(model, out)
print(f"wrote {out} (training accuracy {model.score(X, y):.3f})")
