#!/bin/sh
# Make a private CA and per-host certificates for mutual TLS between the spcs services.
#
#   make-certs.sh DIR ca                      once: DIR/ca.pem (copy to every host), DIR/ca.key (keep safe)
#   make-certs.sh DIR host NAME [SAN ...]     DIR/NAME.pem + DIR/NAME.key, signed by DIR/ca.key
#   make-certs.sh DIR client NAME             DIR/NAME.pem + DIR/NAME.key for an operator (grpcurl)
#
# NAME is the host's name as the other side dials it (a node is dialled on its --advertise
# address, the management service on the address given to the nodes with --management); it
# becomes the certificate's CN and first subjectAltName. Extra SANs are given as OpenSSL
# writes them: DNS:mgmt.example.com, IP:192.0.2.10. Host certificates are valid for TLS server
# and client authentication, because each service uses its one certificate both to serve and
# to call the other services.
#
# Keys are EC P-256, written 0600; CA 10 years, hosts and clients DAYS (default 825) days.
set -eu

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 2 ] || usage
dir=$1
what=$2
shift 2
days=${DAYS:-825}
mkdir -p "$dir"
umask 077

new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

case $what in
ca)
    [ $# -eq 0 ] || usage
    if [ -e "$dir/ca.key" ]; then
        echo "$dir/ca.key exists; not overwriting the CA" >&2
        exit 1
    fi
    new_key "$dir/ca.key"
    openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 -subj "/CN=spcs CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$dir/ca.pem"
    chmod 0644 "$dir/ca.pem"
    echo "wrote $dir/ca.pem and $dir/ca.key"
    ;;
host | client)
    [ $# -ge 1 ] || usage
    name=$1
    shift
    [ -e "$dir/ca.key" ] || { echo "no CA in $dir; run: $0 $dir ca" >&2; exit 1; }
    case $name in
    *[!A-Za-z0-9._-]*) echo "NAME must be a host name or an IP address" >&2; exit 2 ;;
    esac
    if [ "$what" = host ]; then
        # an IPv4 address as NAME is an IP SAN, anything else a DNS SAN
        if printf '%s' "$name" | grep -Eq '^[0-9]+(\.[0-9]+){3}$'; then
            sans="IP:$name"
        else
            sans="DNS:$name"
        fi
        for san in "$@"; do
            sans="$sans,$san"
        done
        usage_ext="serverAuth,clientAuth"
    else
        [ $# -eq 0 ] || usage
        sans="DNS:$name"
        usage_ext="clientAuth"
    fi
    ext=$(mktemp)
    trap 'rm -f "$ext" "$dir/$name.csr"' EXIT
    cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$usage_ext
subjectAltName=$sans
EOF
    new_key "$dir/$name.key"
    openssl req -new -key "$dir/$name.key" -subj "/CN=$name" -out "$dir/$name.csr"
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -sha256 -days "$days" -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
    chmod 0644 "$dir/$name.pem"
    echo "wrote $dir/$name.pem and $dir/$name.key ($sans)"
    ;;
*)
    usage
    ;;
esac
