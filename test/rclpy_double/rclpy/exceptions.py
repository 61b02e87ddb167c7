"""The rclpy parameter exceptions the double raises (same names and meaning as rclpy.exceptions)."""


class ParameterException(Exception):  # noqa: N818 - rclpy's names
    pass


class ParameterNotDeclaredException(ParameterException):
    def __init__(self, parameters, *args):
        Exception.__init__(self, "Invalid access to undeclared parameter(s)", parameters, *args)


class ParameterAlreadyDeclaredException(ParameterException):
    def __init__(self, parameters, *args):
        Exception.__init__(self, "Parameter(s) already declared", parameters, *args)


class InvalidParameterException(ParameterException):
    """rclpy.validate_parameter_name raises it for an empty name."""

    def __init__(self, parameter, *args):
        Exception.__init__(self, "Invalid parameter name", parameter, *args)


class InvalidParameterValueException(ParameterException):
    def __init__(self, parameter, value, reason, *args):
        Exception.__init__(self, f"Invalid parameter value ({value}) for parameter. Reason: {reason}", parameter,
                           *args)


class InvalidParameterTypeException(ParameterException):
    def __init__(self, desired_parameter, expected_type, *args):
        Exception.__init__(self, f"Trying to set parameter '{desired_parameter.name}' to '{desired_parameter.value}'"
                           f" of type '{desired_parameter.type_.name}', expecting type '{expected_type}'", *args)
