#!/usr/bin/env bash
# shellcheck disable=SC2034
# ==============================================================================
# A minimal stand-in for bashio (hassio-addons/bashio v0.17.5), written for the
# add-on tests: only the functions our s6 scripts call, and the ones those call,
# with the same observable behaviour:
#
# - options come from the Supervisor over HTTP with curl
#   (GET $SUPERVISOR_API/addons/self/options/config, Bearer $SUPERVISOR_TOKEN)
#   and are cached in $CACHE_DIR, as bashio::addon.config does;
# - bashio::config prints the string "null" for a missing or null option, an
#   empty string for "", one line per item for a list, and nothing for [] or {};
# - log levels are numbers (LOG_LEVEL, default 5 = INFO); messages go to the
#   shell's original stdout as "[HH:MM:SS] LEVEL: message", through printf %b;
# - bashio::config only works inside $(...): elsewhere errexit stops the script
#   in it (see there);
# - the leaks that make a careless script print secrets are reproduced on
#   purpose: bashio::jq traces its whole input, bashio::api.supervisor logs
#   every response at debug level, bashio::var.has_value traces its value.
# ==============================================================================
set -o errexit
set -o errtrace
set -o nounset
set -o pipefail

readonly __BASHIO_EXIT_OK=0
readonly __BASHIO_EXIT_NOK=1

readonly __BASHIO_LOG_LEVEL_OFF=0
readonly __BASHIO_LOG_LEVEL_FATAL=1
readonly __BASHIO_LOG_LEVEL_ERROR=2
readonly __BASHIO_LOG_LEVEL_WARNING=3
readonly __BASHIO_LOG_LEVEL_NOTICE=4
readonly __BASHIO_LOG_LEVEL_INFO=5
readonly __BASHIO_LOG_LEVEL_DEBUG=6
readonly __BASHIO_LOG_LEVEL_TRACE=7
readonly __BASHIO_LOG_LEVEL_ALL=8
readonly -a __BASHIO_LOG_NAMES=(OFF FATAL ERROR WARNING NOTICE INFO DEBUG TRACE ALL)

readonly __BASHIO_RESET="\033[0m"
readonly __BASHIO_RED="\033[31m"
readonly __BASHIO_GREEN="\033[32m"
readonly __BASHIO_YELLOW="\033[33m"
readonly __BASHIO_MAGENTA="\033[35m"
readonly __BASHIO_CYAN="\033[36m"

declare __BASHIO_SUPERVISOR_API="${SUPERVISOR_API:-http://supervisor}"
declare __BASHIO_SUPERVISOR_TOKEN="${SUPERVISOR_TOKEN:-}"
declare __BASHIO_LOG_LEVEL="${LOG_LEVEL:-5}"
readonly __BASHIO_DEFAULT_LOG_FORMAT="[{TIMESTAMP}] {LEVEL}: {MESSAGE}"
declare __BASHIO_LOG_FORMAT="${LOG_FORMAT:-${__BASHIO_DEFAULT_LOG_FORMAT}}"
declare __BASHIO_LOG_TIMESTAMP="${LOG_TIMESTAMP:-%T}"
declare __BASHIO_CACHE_DIR="${CACHE_DIR:-/tmp/.bashio}"

# Log lines go to the original stdout, also from inside $(...).
if ! [[ "${LOG_FD-}" =~ ^[0-9]+$ ]] || ! { : >&"${LOG_FD-2}"; } 2> /dev/null; then
    exec {LOG_FD}>&1
fi

# --- logging ------------------------------------------------------------------

bashio::log.log() {
    local level="${1}"
    local message="${2}"
    local line

    if [[ "${level}" -gt "${__BASHIO_LOG_LEVEL}" ]]; then
        return "${__BASHIO_EXIT_OK}"
    fi
    line="${__BASHIO_LOG_FORMAT}"
    line="${line//\{TIMESTAMP\}/"$(date +"${__BASHIO_LOG_TIMESTAMP}")"}"
    line="${line//\{MESSAGE\}/"${message}"}"
    line="${line//\{LEVEL\}/"${__BASHIO_LOG_NAMES[${level}]}"}"
    printf '%b\n' "${line}" >&"${LOG_FD}"
}

bashio::log.trace() { bashio::log.log "${__BASHIO_LOG_LEVEL_TRACE}" "$*"; }
bashio::log.debug() { bashio::log.log "${__BASHIO_LOG_LEVEL_DEBUG}" "$*"; }
bashio::log.info() {
    bashio::log.log "${__BASHIO_LOG_LEVEL_INFO}" "${__BASHIO_GREEN}$*${__BASHIO_RESET}"
}
bashio::log.notice() {
    bashio::log.log "${__BASHIO_LOG_LEVEL_NOTICE}" "${__BASHIO_CYAN}$*${__BASHIO_RESET}"
}
bashio::log.warning() {
    bashio::log.log "${__BASHIO_LOG_LEVEL_WARNING}" "${__BASHIO_YELLOW}$*${__BASHIO_RESET}"
}
bashio::log.error() {
    bashio::log.log "${__BASHIO_LOG_LEVEL_ERROR}" "${__BASHIO_MAGENTA}$*${__BASHIO_RESET}"
}
bashio::log.fatal() {
    bashio::log.log "${__BASHIO_LOG_LEVEL_FATAL}" "${__BASHIO_RED}$*${__BASHIO_RESET}"
}

bashio::string.lower() {
    printf '%s' "${1,,}"
}

bashio::log.level() {
    local requested="${1}"
    local level

    case "$(bashio::string.lower "${requested}")" in
        all) level="${__BASHIO_LOG_LEVEL_ALL}" ;;
        trace) level="${__BASHIO_LOG_LEVEL_TRACE}" ;;
        debug) level="${__BASHIO_LOG_LEVEL_DEBUG}" ;;
        info) level="${__BASHIO_LOG_LEVEL_INFO}" ;;
        notice) level="${__BASHIO_LOG_LEVEL_NOTICE}" ;;
        warning) level="${__BASHIO_LOG_LEVEL_WARNING}" ;;
        error) level="${__BASHIO_LOG_LEVEL_ERROR}" ;;
        fatal | critical) level="${__BASHIO_LOG_LEVEL_FATAL}" ;;
        off) level="${__BASHIO_LOG_LEVEL_OFF}" ;;
        *) bashio::exit.nok "Unknown log_level: ${requested}" ;;
    esac
    export __BASHIO_LOG_LEVEL="${level}"
}

# --- exit, variables, jq ------------------------------------------------------

bashio::exit.nok() {
    local message="${1:-}"

    bashio::log.trace "${FUNCNAME[0]}:" "$@"
    if [[ -n "${message}" ]]; then
        bashio::log.fatal "${message}"
    fi
    exit "${__BASHIO_EXIT_NOK}"
}

bashio::var.has_value() {
    bashio::log.trace "${FUNCNAME[0]}:" "$@"
    [[ -n "${1}" ]]
}

bashio::var.true() {
    bashio::log.trace "${FUNCNAME[0]}:" "$@"
    [[ "${1:-null}" == "true" ]]
}

bashio::var.json_string() {
    local escaped

    if escaped="$(printf '%s' "${1}" | jq -Rs .)"; then
        echo "${escaped}"
        return "${__BASHIO_EXIT_OK}"
    fi
    bashio::log.error "Failed to escape string"
    return "${__BASHIO_EXIT_NOK}"
}

# Pairs of key and value; a value starting with ^ is raw JSON, others are strings.
bashio::var.json() {
    local -a pairs=("$@")
    local json=""
    local index

    if [[ ${#pairs[@]} -eq 0 ]]; then
        bashio::log.error "Length of input array needs to be at least 2"
        return "${__BASHIO_EXIT_NOK}"
    fi
    if [[ $((${#pairs[@]} % 2)) -eq 1 ]]; then
        bashio::log.error "Length of input array needs to be even (key/value pairs)"
        return "${__BASHIO_EXIT_NOK}"
    fi
    for ((index = 0; index < ${#pairs[@]}; index += 2)); do
        local value="${pairs[index + 1]}"
        if [[ "${value:0:1}" == "^" ]]; then
            value="${value:1}"
        else
            value="$(bashio::var.json_string "${value}")"
        fi
        json+=",\"${pairs[index]}\":${value}"
    done
    echo "{${json:1}}"
}

bashio::jq() {
    local data="${1}"
    local filter="${2:-}"

    bashio::log.trace "${FUNCNAME[0]}:" "$@"
    if [[ -f "${data}" ]]; then
        jq --raw-output -c -M "${filter}" "${data}"
    else
        jq --raw-output -c -M "${filter}" <<< "${data}"
    fi
}

# --- cache --------------------------------------------------------------------

bashio::cache.exists() { [[ -f "${__BASHIO_CACHE_DIR}/${1}.cache" ]]; }

bashio::cache.get() {
    bashio::cache.exists "${1}" || return "${__BASHIO_EXIT_NOK}"
    printf '%s' "$(< "${__BASHIO_CACHE_DIR}/${1}.cache")"
}

bashio::cache.set() {
    mkdir -p "${__BASHIO_CACHE_DIR}" || bashio::exit.nok "Could not create cache folder"
    printf '%s' "${2}" > "${__BASHIO_CACHE_DIR}/${1}.cache"
}

bashio::cache.flush_all() {
    rm -rf "${__BASHIO_CACHE_DIR}" || bashio::exit.nok "Could not flush cache"
}

# --- Supervisor API -----------------------------------------------------------

# METHOD RESOURCE [RAW_OR_DATA] [FILTER]: for POST a third argument is the body;
# "true" returns the whole response; otherwise .data (filtered) is printed.
bashio::api.supervisor() {
    local method="${1}"
    local resource="${2}"
    local raw="${3:-}"
    local filter="${4:-}"
    local auth_header="Authorization: Bearer"
    local data="{}"
    local response
    local status
    local result

    bashio::log.trace "${FUNCNAME[0]}" "$@"
    if [[ -n "${__BASHIO_SUPERVISOR_TOKEN:-}" ]]; then
        auth_header="Authorization: Bearer ${__BASHIO_SUPERVISOR_TOKEN}"
    fi
    if [[ "${method}" == "POST" ]] && [[ -n "${raw}" ]]; then
        data="${raw}"
    fi

    if ! response="$(curl --silent --show-error --write-out '\n%{http_code}' \
        --request "${method}" -H "${auth_header}" -H "Content-Type: application/json" \
        -d "${data}" "${__BASHIO_SUPERVISOR_API}${resource}")"; then
        bashio::log.debug "${response}"
        bashio::log.error "Something went wrong contacting the API"
        return "${__BASHIO_EXIT_NOK}"
    fi
    status="${response##*$'\n'}"
    response="${response%"${status}"}"

    bashio::log.debug "Requested API resource: ${__BASHIO_SUPERVISOR_API}${resource}"
    bashio::log.debug "Request method: ${method}"
    bashio::log.debug "Request data: ${data}"
    bashio::log.debug "API HTTP Response code: ${status}"
    bashio::log.debug "API Response: ${response}"

    case "${status}" in
        401)
            bashio::log.error "Unable to authenticate with the API, permission denied"
            return "${__BASHIO_EXIT_NOK}"
            ;;
        403)
            bashio::log.error "Unable to access the API, forbidden"
            return "${__BASHIO_EXIT_NOK}"
            ;;
        404)
            bashio::log.error "Requested resource ${resource} was not found"
            return "${__BASHIO_EXIT_NOK}"
            ;;
        405)
            bashio::log.error "Requested resource ${resource} was called using an unallowed method."
            return "${__BASHIO_EXIT_NOK}"
            ;;
    esac
    if [[ "$(bashio::jq "${response}" ".result")" == "error" ]]; then
        bashio::log.error "Got unexpected response from the API:" \
            "$(bashio::jq "${response}" '.message // empty')"
        return "${__BASHIO_EXIT_NOK}"
    fi
    if [[ "${status}" -ne 200 ]]; then
        bashio::log.error "Unknown HTTP error occurred"
        return "${__BASHIO_EXIT_NOK}"
    fi
    if bashio::var.true "${raw}"; then
        echo "${response}"
        return "${__BASHIO_EXIT_OK}"
    fi
    result="$(bashio::jq "${response}" 'if .data == {} then empty else .data end')"
    if [[ -n "${filter}" ]]; then
        bashio::log.debug "Filtering response using: ${filter}"
        result="$(bashio::jq "${result}" "${filter}")"
    fi
    echo "${result}"
}

# --- add-on options -----------------------------------------------------------

bashio::addon.config() {
    local key="addons.self.options.config"
    local response

    bashio::log.trace "${FUNCNAME[0]}"
    if bashio::cache.exists "${key}"; then
        bashio::cache.get "${key}"
        return "${__BASHIO_EXIT_OK}"
    fi
    if ! response="$(bashio::api.supervisor GET "/addons/self/options/config" false)"; then
        bashio::log.error "Failed to get addon config from Supervisor API"
        return "${__BASHIO_EXIT_NOK}"
    fi
    if [[ -z "${response}" ]]; then
        response="{}"
    fi
    bashio::cache.set "${key}" "${response}"
    printf '%s' "${response}"
}

# KEY [DEFAULT]: the option's value; DEFAULT (or "null") when missing or null.
bashio::config() {
    local key="${1}"
    local default_value="${2:-null}"
    local options
    local result
    local query

    bashio::log.trace "${FUNCNAME[0]}:" "$@"
    # Like bashio, the query is read from a here-document with `read -d ''`, which
    # returns 1 at its end: under errexit (a plain call, or a process substitution,
    # which inherits it) the script stops right here. Only $(bashio::config ...)
    # works, because command substitutions do not inherit errexit.
    read -r -d '' query << QUERY
        if (.${key} == null) then null
        elif (.${key} | type == "string") then .${key} // empty
        elif (.${key} | type == "boolean") then .${key} // false
        elif (.${key} | type == "array") then
            if (.${key} == []) then empty else .${key}[] end
        elif (.${key} | type == "object") then
            if (.${key} == {}) then empty else .${key} end
        else .${key} end
QUERY
    options="$(bashio::addon.config)"
    result="$(bashio::jq "${options}" "${query}")"
    if [[ "${result}" == "null" ]]; then
        echo "${default_value}"
    else
        printf '%s' "${result}"
    fi
}

bashio::config.has_value() {
    local value

    bashio::log.trace "${FUNCNAME[0]}:" "$@"
    value="$(bashio::config "${1}")"
    [[ "${value}" != "null" ]] && bashio::var.has_value "${value}"
}

bashio::config.true() {
    bashio::log.trace "${FUNCNAME[0]}:" "$@"
    bashio::var.true "$(bashio::config "${1}")"
}

# --- discovery ----------------------------------------------------------------

bashio::discovery() {
    local service="${1}"
    local config="${2}"
    local payload

    bashio::log.trace "${FUNCNAME[0]}:" "$@"
    payload="$(bashio::var.json service "${service}" config "^${config}")"
    bashio::api.supervisor "POST" "/discovery" "${payload}" ".uuid"
    bashio::cache.flush_all
}
