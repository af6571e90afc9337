"""wastesort daemon: camera -> detect/track -> classify -> schedule -> serial gates, events on MQTT.

Importing this package is cheap on purpose (no torch, no OpenCV): the controller
simulator and the CLI's config checker must start fast.
"""

__all__: list[str] = []
