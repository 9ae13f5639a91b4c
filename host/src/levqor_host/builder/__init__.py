"""The pipeline builder's tools on the host side: pinned sample data (``pinned.py``) and the
field picker's samples (``fields.py``); ``document.py`` walks a pipeline document's steps,
nested ones too. No Flask: the routes are in ``web/api/builder.py``."""
