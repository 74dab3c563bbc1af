"""The Open Inference Protocol v2 (KServe's REST API, with Triton's binary tensor and model
repository extensions) under /v2: `codec` turns bodies into tensors and back, `views` answers
the routes, `urls` lists them. Inference goes through `inference.services`, like /api/v1."""
