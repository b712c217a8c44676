#!/bin/sh
# Make a private CA and the certificates of mutual TLS between the spcs services, with roles.
#
#   make-certs.sh DIR ca                               once: DIR/ca.pem (copy to every host), DIR/ca.key (keep safe)
#   make-certs.sh DIR management NAME [SAN ...]        the management host: DIR/NAME.pem + DIR/NAME.key
#   make-certs.sh DIR node NAME HOST_ID [SAN ...]      a KVM host whose node runs with --host-id HOST_ID
#   make-certs.sh DIR operator NAME                    the CloudStack shim, grpcurl, the spcs CLI
#
# Each certificate carries its spcs role as a URI subjectAltName, spiffe://TRUST_DOMAIN/spcs/ROLE
# with ROLE management, operator or node/HOST_ID; the services allow each role only its own
# calls (docs/deploy.md#4-tls). TRUST_DOMAIN is $SPCS_TRUST_DOMAIN (default spcs).
#
# NAME of a host is its name as the other side dials it (a node is dialled on its --advertise
# address, the management service on the address given to the nodes with --management); it
# becomes the certificate's CN and first DNS (or IP) subjectAltName. Extra SANs are given as
# OpenSSL writes them: DNS:mgmt.example.com, IP:192.0.2.10. Host certificates are valid for TLS
# server and client authentication, because each service uses its one certificate both to serve
# and to call the other services; operator certificates for client authentication only.
#
# Keys are EC P-256, written 0600; CA 10 years, the others DAYS (default 825) days.
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
domain=${SPCS_TRUST_DOMAIN:-spcs}
case $domain in
'' | *[!a-z0-9._-]*)
    echo "SPCS_TRUST_DOMAIN '$domain' is not a trust domain (lower-case letters, digits, . _ -)" >&2
    exit 2
    ;;
esac
mkdir -p "$dir"
umask 077

new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

need_ca() {
    [ -e "$dir/ca.key" ] || { echo "no CA in $dir; run: $0 $dir ca" >&2; exit 1; }
}

check_name() {
    case $1 in
    '' | *[!A-Za-z0-9._-]*)
        echo "NAME '$1' must be a host name or an IP address (letters, digits, . _ -)" >&2
        exit 2
        ;;
    esac
}

# the NAME of a host as its first SAN: an IPv4 address is an IP SAN, anything else a DNS SAN
name_san() {
    if printf '%s' "$1" | grep -Eq '^[0-9]+(\.[0-9]+){3}$'; then
        printf 'IP:%s' "$1"
    else
        printf 'DNS:%s' "$1"
    fi
}

# issue NAME USAGE SANS: DIR/NAME.key and DIR/NAME.pem signed by the CA
issue() {
    name=$1
    ext=$(mktemp)
    trap 'rm -f "$ext" "$dir/$name.csr"' EXIT
    cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$2
subjectAltName=$3
EOF
    new_key "$dir/$name.key"
    openssl req -new -key "$dir/$name.key" -subj "/CN=$name" -out "$dir/$name.csr"
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -sha256 -days "$days" -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
    chmod 0644 "$dir/$name.pem"
    echo "wrote $dir/$name.pem and $dir/$name.key ($3)"
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
management)
    [ $# -ge 1 ] || usage
    name=$1
    shift
    check_name "$name"
    need_ca
    sans="$(name_san "$name"),URI:spiffe://$domain/spcs/management"
    for san in "$@"; do
        sans="$sans,$san"
    done
    issue "$name" "serverAuth,clientAuth" "$sans"
    ;;
node)
    [ $# -ge 2 ] || usage
    name=$1
    host_id=$2
    shift 2
    check_name "$name"
    # the CloudStack host id, as the node's --host-id (spcs accepts these characters)
    if ! printf '%s' "$host_id" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'; then
        echo "HOST_ID '$host_id' is not a CloudStack host id (letters, digits, . _ : -)" >&2
        exit 2
    fi
    need_ca
    sans="$(name_san "$name"),URI:spiffe://$domain/spcs/node/$host_id"
    for san in "$@"; do
        sans="$sans,$san"
    done
    issue "$name" "serverAuth,clientAuth" "$sans"
    ;;
operator)
    [ $# -eq 1 ] || usage
    name=$1
    check_name "$name"
    need_ca
    issue "$name" "clientAuth" "URI:spiffe://$domain/spcs/operator"
    ;;
*)
    usage
    ;;
esac
