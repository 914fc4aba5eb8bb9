"""The compose gateway's nginx configuration (dev/gateway/nginx.conf) made runnable by a local
nginx, for the scripts that run the services as local processes (dev/bench.py,
dev/compose_smoke.py): compose's DNS resolver dropped (the caller has already turned the service
host names into addresses), and the pid file, logs and temporary files under the caller's
directory."""

import os
import re


def local_gateway_conf(text, out, access_log):
    """`text` (the gateway configuration, host names already localized) with its files under
    `out`; `access_log` is a path, or "off"."""
    text = re.sub(r"^\s*resolver\s+[^;]*;\s*$", "", text, flags=re.M)
    temp = os.path.join(out, "nginx")
    os.makedirs(temp, exist_ok=True)
    paths = "".join(f"  {d}_temp_path {temp}/{d};\n" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = text.replace("http {", f"http {{\n  access_log {access_log};\n{paths}", 1)
    return f"pid {out}/nginx.pid;\nerror_log {out}/gateway-error.log;\n" + text
