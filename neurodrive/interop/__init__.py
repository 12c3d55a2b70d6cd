"""Bridges to the tools AV and neural-rendering teams already use: a nerfstudio dataset export
(``nerfstudio_export``) and Rerun recordings of logs and episodes (``rerun_recording``)."""
