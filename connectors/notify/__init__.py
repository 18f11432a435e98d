"""Customer notices (kind ``notify``): SMS through Aliyun ``SendSms`` or
e-mail over SMTP, at the status changes the sync rules name; the words per
status are ``mappings/notify.yaml`` (zh-CN). ``sms_simulator.py`` is a local
dysmsapi that checks the signature; ``smtp_simulator.py`` a real local SMTP
server (aiosmtpd) that keeps what it receives.
"""

from connectors.notify.destination import NotifyDestination, NotifyDestinationConfig
from hub.interfaces import ConnectorSpec, DestinationKind

CONNECTOR = ConnectorSpec(
    name="notify",
    destinations=(DestinationKind("notify", NotifyDestinationConfig, factory=NotifyDestination,
                                  summary="customer notices: SMS (Aliyun) or e-mail (SMTP)"),),
)

__all__ = ["CONNECTOR"]
