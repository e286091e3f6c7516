"""A pytest fixture that starts mboxd on a free port and reads what arrived with `mailbox`.

Run: MBOXD=/path/to/mboxd python3 -m pytest examples/python
"""
import mailbox
import os
import select
import smtplib
import subprocess

import pytest

MBOXD = os.environ.get("MBOXD", "mboxd")


@pytest.fixture
def start_mboxd(tmp_path):
    """Starts mboxd with extra flags; returns (host, port, mail_dir). Stopped after the test."""
    procs = []

    def start(*flags):
        mail = tmp_path / "mail"
        # A grace of 1 s, not 30: a test that left a client inside a message still stops
        # within the wait below. stderr (the log) is inherited: a pipe nobody reads would fill
        # up after a few hundred messages and stall the server's next log line.
        proc = subprocess.Popen(
            [MBOXD, "--listen", "127.0.0.1:0", "--mail-dir", str(mail), "--shutdown-grace", "1",
             *flags],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        # "listening on 127.0.0.1:PORT", once it accepts; waited for 10 s at most.
        if not select.select([proc.stdout], [], [], 10)[0]:
            pytest.fail("mboxd printed no listening line within 10 s")
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            pytest.fail(f"mboxd did not start (exit status {proc.wait(timeout=10)})")
        host, port = line.split()[-1].rsplit(":", 1)
        return host, int(port), mail

    yield start
    for proc in procs:
        proc.terminate()  # SIGTERM: every acknowledged message is already on disk
    try:
        for proc in procs:
            assert proc.wait(timeout=10) == 0
    finally:
        for proc in procs:
            proc.kill()  # does nothing once wait() has seen it exit


def test_the_application_sends_a_welcome_mail(start_mboxd):
    host, port, mail = start_mboxd()
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


def test_the_application_logs_in(start_mboxd):
    host, port, mail = start_mboxd("--auth-accept-any", "--auth-required")
    with smtplib.SMTP(host, port) as smtp:
        smtp.login("app", "any password")
        smtp.sendmail("app@example.com", ["alice@localhost"], "Subject: Hi\r\n\r\nHi\r\n")
    assert len(mailbox.mbox(mail / "alice")) == 1


def test_a_busy_mailbox_is_reported(start_mboxd):
    # A failure rule: every recipient whose address starts with "busy" gets 450.
    host, port, mail = start_mboxd("--fail", "rcpt:busy*@*=450 mailbox busy")
    with smtplib.SMTP(host, port) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail("app@example.com", ["busy@localhost"], "Subject: x\r\n\r\nx\r\n")
    assert refused.value.recipients["busy@localhost"][0] == 450
    assert not (mail / "busy").exists()
