"""Pure-Python core (numpy / Open3D): geometry, fusion, instances, snapshot, BEV, markers.

Nothing under this package imports rclpy; tests/test_packaging.py enforces it.
"""
