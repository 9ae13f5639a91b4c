"""The pipeline builder's tools on the host side: pinned sample data (``pinned.py``), the
field picker's samples (``fields.py``) and testing one step alone (``steptest.py``);
``document.py`` walks a pipeline document's steps, nested ones too. No Flask: the routes are
in ``web/api/builder.py``."""
