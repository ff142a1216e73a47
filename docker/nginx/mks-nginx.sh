#!/bin/sh
# compose's nginx: the site from its template with this stack's ports, checked, then nginx as PID 1.
set -eu
https_port=${MKS_HTTPS_PORT:-443}
backend_port=${MKS_BACKEND_PORT:-5100}
sed -e "s/@HTTPS_PORT@/$https_port/g" -e "s/@BACKEND_PORT@/$backend_port/g" \
    /etc/nginx/mks.conf.template > /etc/nginx/sites-enabled/mks
nginx -t -q
exec nginx -g "daemon off;"
