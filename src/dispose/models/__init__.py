"""Networks: motion and point encoders, hybrid ControlNets, the base animation UNets and PoseNet."""
