"""The app layer: CLI commands, device-cloud router, OpenAI-compatible server, cloud client, default
model. It sits above edgecpm.runtime and edgecpm.export; nothing below imports it."""
