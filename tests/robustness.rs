//! No input makes the protocol core panic: random bytes and random mixes of real commands are
//! fed through the same entry point the fuzz targets use (`fuzz/`), with a fixed seed so a
//! failure is reproducible.

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&[u8]] = &[
    b"EHLO x\r\n",
    b"HELO x\r\n",
    b"MAIL FROM:<a@b>\r\n",
    b"MAIL FROM:<> SIZE=10 BODY=8BITMIME SMTPUTF8\r\n",
    b"RCPT TO:<a@mx.test>\r\n",
    b"RCPT TO:<list@mx.test>\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"DATA\r\n",
    b".\r\n",
    b"..x\r\n",
    b"BDAT 5\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 3 LAST\r\n",
    b"RSET\r\n",
    b"VRFY a\r\n",
    b"EXPN list\r\n",
    b"HELP\r\n",
    b"HELP mail\r\n",
    b"NOOP\r\n",
    b"TURN\r\n",
    b"SEND FROM:<a@b>\r\n",
    b"SOML FROM:<a@b>\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b"\xff\xfe",
    b"<",
    b">",
    b"@",
    b":",
    b"\"",
    b"From x\r\n",
    "RCPT TO:<jörg@mx.test>\r\n".as_bytes(),
];

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..5_000 {
        let len = rng.below(600);
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        mboxd::fuzz::session(&data);
        mboxd::fuzz::command(&data);
    }
}

#[test]
fn random_command_mixes_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let mut data = Vec::new();
        for _ in 0..rng.below(30) {
            data.extend_from_slice(PIECES[rng.below(PIECES.len())]);
            if rng.below(10) == 0 {
                data.push(rng.next() as u8);
            }
        }
        mboxd::fuzz::session(&data);
    }
}
