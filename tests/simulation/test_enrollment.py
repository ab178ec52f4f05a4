"""Device enrolment: what `fedbeat enroll` hands out must work where devices use it."""
from __future__ import annotations

from edge_runtime.__main__ import build_parser
from simulation.coordinator.enrollment import enroll


def test_every_enrolled_token_reads_as_a_token_on_the_device_command_line(tmp_path):
    # One base64url token in 64 began with "-": `join --token -x...` then failed to parse (a 3-device CI round hit it).
    tokens = enroll(tmp_path / "devices.txt", 500)
    parser = build_parser()
    for token in tokens:
        args = parser.parse_args(["join", "--server", "localhost:1", "--token", token, "--data", "x.npz", "--insecure"])
        assert args.token == token and len(token) == 64
