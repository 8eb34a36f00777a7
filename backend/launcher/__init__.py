"""The desktop launcher: the server as a supervised child process, its state, the tray icon and console."""
