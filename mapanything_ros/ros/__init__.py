"""ROS 2 adapter: the only part of the package that imports rclpy and message types."""
