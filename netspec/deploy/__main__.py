"""`python -m netspec.deploy`: which onnxruntime providers this machine offers, and why not."""

from netspec.deploy.runtime import probe_providers

for probe in probe_providers().values():
    print(f"{probe.name:9} {'usable' if probe.usable else 'no: ' + probe.reason}")
