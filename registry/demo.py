"""The demo model `make run` registers: scikit-learn's iris classifier, converted with skl2onnx.

Needs the development requirements (scikit-learn, skl2onnx); production images do not.
"""

from __future__ import annotations

DEMO_NAME = "iris-classifier"
DEMO_VERSION = "1.0.0"


def build_iris_onnx() -> bytes:
    """A logistic regression on the iris data set (4 float features -> label + 3 probabilities).

    ZipMap is off so the outputs are plain tensors that both /api/v1 and /v2 can carry.
    """
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    classifier = LogisticRegression(max_iter=500).fit(features, labels)
    onnx_model = to_onnx(
        classifier,
        features[:1].astype(np.float32),
        options={id(classifier): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    onnx_model.doc_string = "Iris species from sepal and petal length and width (cm)."
    return onnx_model.SerializeToString()
