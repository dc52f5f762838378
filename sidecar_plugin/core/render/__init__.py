"""What render writes, as bytes: the plan of a render and every file of it.

``terms`` holds the types every piece shares (``RenderOptions``, ``RenderError``);
``layout`` places each sidecar (program, port, folder; ``naming`` for a fleet);
``plan_files`` assembles the include and the record, from ``sections`` (supervisord's
sections, written exactly through ``ini``) and ``litellm_yaml``; ``masterkey`` is
the rule a provided key must pass.
"""
