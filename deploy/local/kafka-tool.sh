#!/usr/bin/env bash
# Run a Kafka command line tool from the jars install.sh put in $FNBUS_HOME/kafka/libs,
# against the local broker unless --bootstrap-server is given.
#
#   kafka-tool.sh topics --list
#   kafka-tool.sh topics --create --topic t --partitions 4 --replication-factor 1
#   kafka-tool.sh produce --topic t                    (lines from stdin)
#   kafka-tool.sh consume --topic t --from-beginning --max-messages 1
#   kafka-tool.sh groups --list
#   kafka-tool.sh quorum describe --status
#   kafka-tool.sh org.apache.kafka.tools.SomeOtherTool ARGS...   (any main class)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

(($# >= 1)) || {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}
tool=$1
shift
case $tool in
  topics) class=org.apache.kafka.tools.TopicCommand ;;
  produce) class=kafka.tools.ConsoleProducer ;;
  consume) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
  groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
  quorum) class=org.apache.kafka.tools.MetadataQuorumCommand ;;
  *.*) class=$tool ;;
  *) fnbus_die kafka-tool "unknown tool '$tool'" ;;
esac

libs=$FNBUS_HOME/kafka/libs
compgen -G "$libs/kafka-tools-*.jar" >/dev/null ||
  fnbus_die kafka-tool "no jars in $libs; run deploy/local/install.sh"

args=("$@")
case " $* " in
  *" --bootstrap-server "* | *" --bootstrap-controller "*) ;;
  *) args=(--bootstrap-server "127.0.0.1:${FNBUS_KAFKA_PORT:-9092}" "${args[@]}") ;;
esac

# tools log WARN and above to stderr
log4j=$FNBUS_HOME/kafka/config/tools-log4j.properties
mkdir -p "${log4j%/*}"
[[ -f $log4j ]] || cat >"$log4j" <<'EOF'
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF

exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
  "-Dlog4j.configuration=file:$log4j" -cp "$libs/*" "$class" "${args[@]}"
