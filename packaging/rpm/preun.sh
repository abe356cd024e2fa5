# $1 = 0: the package is being removed, not upgraded.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now tailhook.service || :
fi
