"""Front ends: thin layers that turn a user's input into :class:`ferkit.core.recognizer.Recognizer`
calls and present the results.

``cli/`` (the ``ferkit`` command), ``service/`` (HTTP API and web page), ``video/`` (files and
live camera, with the face tracker), ``batch`` (folders and archives on one machine) and
``distributed`` (the same per-image work on a Ray cluster). None holds a pipeline of its own.
"""
