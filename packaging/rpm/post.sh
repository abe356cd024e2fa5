/usr/lib/tailhook/tailhook-setup
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    # $1 > 1: an upgrade restarts an agent that was running. A first install
    # starts nothing: the webhook URL must be configured first.
    if [ "$1" -gt 1 ]; then
        systemctl try-restart tailhook.service || :
    fi
fi
