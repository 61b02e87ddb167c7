"""The rclpy parameter exceptions the double raises (same names and meaning as rclpy.exceptions).

Their ``args`` differ by distribution: humble passes (message, parameter, ...); jazzy's ParameterException
builds one string, ``f"{message}: {parameter}"`` (rclpy jazzy ``exceptions.py``)."""


def _init(exc: Exception, message: str, parameter, *args) -> None:
    import ros_double

    if ros_double.DISTRO == "humble":
        Exception.__init__(exc, message, parameter, *args)
    else:
        Exception.__init__(exc, f"{message}: {parameter}")


class ParameterException(Exception):  # noqa: N818 - rclpy's names
    pass


class ParameterNotDeclaredException(ParameterException):
    def __init__(self, parameters, *args):
        _init(self, "Invalid access to undeclared parameter(s)", parameters, *args)


class ParameterAlreadyDeclaredException(ParameterException):
    def __init__(self, parameters, *args):
        _init(self, "Parameter(s) already declared", parameters, *args)


class InvalidParameterException(ParameterException):
    """rclpy.validate_parameter_name raises it for an empty name."""

    def __init__(self, parameter, *args):
        _init(self, "Invalid parameter name", parameter, *args)


class InvalidParameterValueException(ParameterException):
    def __init__(self, parameter, value, reason, *args):
        _init(self, f"Invalid parameter value ({value}) for parameter. Reason: {reason}", parameter, *args)


class InvalidParameterTypeException(ParameterException):
    def __init__(self, desired_parameter, expected_type, *args):
        import ros_double

        message = (f"Trying to set parameter '{desired_parameter.name}' to '{desired_parameter.value}' of type "
                   f"'{desired_parameter.type_.name}', expecting type '{expected_type}'")
        if ros_double.DISTRO == "humble":
            Exception.__init__(self, message, *args)
        else:
            Exception.__init__(self, f"{message}: {desired_parameter.name}")
