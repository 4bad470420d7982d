"""A signer that misbehaves on `sign`, for the harness's tests: it passes every request
to a real signer (`hsm-harness signer serve`) and answers it, except that on the first
`sign` it does what MODE says:

  exit     says so on standard error, then exits with status 3
  hang     never answers
  garbage  answers with a line that is not JSON

Usage: faulty_signer.py MODE HSM_HARNESS --config F --state D
"""

import json
import subprocess
import sys
import time

mode, harness, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
real = subprocess.Popen(
    [harness, "signer", "serve", *rest],
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
)
for line in sys.stdin:
    request = json.loads(line)
    if request.get("op") == "sign":
        if mode == "exit":
            print("faulty signer: about to die in the middle of sign", file=sys.stderr, flush=True)
            real.kill()
            sys.exit(3)
        if mode == "hang":
            print("faulty signer: hanging on sign", file=sys.stderr, flush=True)
            time.sleep(3600)
        if mode == "garbage":
            print("this is not JSON, it is a signer gone wrong", flush=True)
            continue
    real.stdin.write(line)
    real.stdin.flush()
    answer = real.stdout.readline()
    sys.stdout.write(answer)
    sys.stdout.flush()
    if request.get("op") == "shutdown":
        break
real.wait()
