"""Everything about Label Studio's side of the conversation, for the backend and the tools.

`label_config` reads a labeling config (which controls make masks, where the image and the
expression are); `tasks` reads task data and names why a task is skipped; `regions` turns masks
into brush/polygon regions and back; `image_fetch` downloads task images safely; `auth` makes the
Authorization header from a legacy token or a personal access token;
`export_source` streams an export or a live project's snapshot; `client` talks to the REST API;
`local_server` runs a real Label Studio (and our backend) on 127.0.0.1 for the demo and tests.
"""
