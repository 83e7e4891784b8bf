"""A real SMTP server on loopback for the e-mail tests (aiosmtpd): every message accepted is
printed to standard output as one JSON line; the first REFUSE messages get a temporary 451."""

import asyncio
import json
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, refuse):
        self.refuse = refuse

    async def handle_DATA(self, server, session, envelope):
        if self.refuse > 0:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        print(
            json.dumps(
                {
                    "from": envelope.mail_from,
                    "to": envelope.rcpt_tos,
                    "starttls": session.ssl is not None,
                    "data": envelope.content.decode("utf-8", "replace"),
                }
            ),
            flush=True,
        )
        return "250 2.0.0 OK"


def main():
    port = int(sys.argv[1])
    refuse = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    controller = Controller(Sink(refuse), hostname="127.0.0.1", port=port)
    controller.start()
    print("READY", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
