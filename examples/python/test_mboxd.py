"""A pytest fixture that starts mboxd on a free port and reads what arrived with `mailbox`.

Run: MBOXD=/path/to/mboxd python3 -m pytest examples/python
"""
import mailbox
import os
import smtplib
import subprocess

import pytest

MBOXD = os.environ.get("MBOXD", "mboxd")


@pytest.fixture
def mboxd(tmp_path):
    """Yields (host, port, mail_dir) of a server that is stopped after the test."""
    mail = tmp_path / "mail"
    proc = subprocess.Popen(
        [MBOXD, "--listen", "127.0.0.1:0", "--mail-dir", str(mail)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # "listening on 127.0.0.1:PORT", once it accepts
        host, port = line.split()[-1].rsplit(":", 1)
        yield host, int(port), mail
    finally:
        proc.terminate()  # SIGTERM: every acknowledged message is already on disk
        assert proc.wait(timeout=10) == 0


def test_the_application_sends_a_welcome_mail(mboxd):
    host, port, mail = mboxd
    with smtplib.SMTP(host, port) as smtp:
        smtp.sendmail(
            "app@example.com",
            ["alice@localhost"],
            "Subject: Welcome\r\n\r\nHello, and welcome.\r\n",
        )
    # 250 came only once the message was synced, so it is there now: no polling.
    messages = list(mailbox.mbox(mail / "alice"))
    assert len(messages) == 1
    assert messages[0]["Subject"] == "Welcome"
    # (Python's mailbox reads mboxo: a body line starting "From " would come back ">From ".)
    assert messages[0].get_payload() == "Hello, and welcome.\n"
