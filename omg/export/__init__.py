"""Export: the model as graphs other runtimes execute (ONNX, torch.export), and a runtime that runs them.

- :mod:`omg.export.graphs`: the three exported modules (image encoder, object-query decoder, prompt decoder)
  and :func:`export` (``omg export``), which writes them with ``export.json``;
- :mod:`omg.export.runtime`: :class:`~omg.export.runtime.ExportedModel`, a drop-in model for
  :class:`omg.inference.predictor.OMGPredictor` whose features and decoders come from the exported graphs
  (``omg predict --runtime onnx``), so the post-processing is the PyTorch path's own.
"""
