"""The one exception type for errors a user can cause."""


class RlsaeError(Exception):
    """A user-fixable problem: bad path, wrong shape, corrupt file, NaNs, bad option.

    The message is one line that says what is wrong and what to do. The CLI prints it as
    ``error: <message>`` on stderr and exits with status 2, without a traceback.
    """
