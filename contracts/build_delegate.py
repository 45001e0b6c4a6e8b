"""Compile SweepDelegate.sol (solcjs, standard JSON) into the artifact ctripd ships:
ABI, creation code, runtime code and where the immutable `treasury` sits in it (ctripd checks
a delegate's deployed code against the runtime code with its treasury written there).

Run by `make delegate` from the repository root."""

import json
import subprocess
import sys
from pathlib import Path

SOURCE = Path("contracts/SweepDelegate.sol")
OUT = Path("ctripd/chain/contracts/SweepDelegate.json")
SOLCJS = "tools/node_modules/.bin/solcjs"

request = {
    "language": "Solidity",
    "sources": {"SweepDelegate.sol": {"content": SOURCE.read_text()}},
    "settings": {
        "optimizer": {"enabled": True, "runs": 200},
        "evmVersion": "cancun",
        "metadata": {"bytecodeHash": "none", "appendCBOR": False},
        "outputSelection": {
            "*": {
                "*": [
                    "abi",
                    "evm.bytecode.object",
                    "evm.deployedBytecode.object",
                    "evm.deployedBytecode.immutableReferences",
                ]
            }
        },
    },
}
done = subprocess.run(
    [SOLCJS, "--standard-json"], input=json.dumps(request), capture_output=True, text=True,
    check=True,
)
output = json.loads(done.stdout[done.stdout.index("{") :])
errors = [e for e in output.get("errors", []) if e["severity"] == "error"]
if errors:
    sys.exit("\n".join(e["formattedMessage"] for e in errors))
contract = output["contracts"]["SweepDelegate.sol"]["SweepDelegate"]
deployed = contract["evm"]["deployedBytecode"]
artifact = {
    "compiler": "solc " + subprocess.run(
        [SOLCJS, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip(),
    "abi": contract["abi"],
    "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
    "runtime": "0x" + deployed["object"],
    "treasury_offsets": sorted(
        ref["start"] for refs in deployed["immutableReferences"].values() for ref in refs
    ),
}
OUT.write_text(json.dumps(artifact, indent=1) + "\n")
print(f"wrote {OUT}")
