"""rosbag2 I/O in pure Python (``rosbags``; no rclpy).

- :mod:`.topics` default topic names and frame ids (shared with the nodes);
- :mod:`.messages` message <-> numpy conversions and the typestore with ``scene_vlm_interfaces``;
- :mod:`.writer` :class:`~.writer.BagWriter` (MCAP / sqlite3, metadata version 8);
- :mod:`.reader` :func:`~.reader.read_bag` (posed, synchronised frames), :func:`~.reader.read_bag_info`,
  :func:`~.reader.iter_raw_messages` (CDR bytes for live replay).

Submodules are not imported here so that ``import scene_vlm_ros.bag.topics`` stays free of ``rosbags``.
"""
