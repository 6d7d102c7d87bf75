"""One run of ``tta.run``, one module per stage, called in order by ``orchestrator.run``.

``config`` (settings, torch-free), ``outputs`` (paths checked first, files written last), ``prepare``
(data, stream, model, adapter), ``resume`` (saved progress), ``evaluate`` (the online pass), ``results``
(the result document), with ``result_name`` and ``plotting`` beside them. Kept empty of imports, so that
``tta.pipeline.config`` loads without torch.
"""
