package dev.pglock.benchmarks;

import java.util.Locale;

/**
 * One row of the output: a system in a scenario. Null fields were not measured. {@code clients} is
 * how many callers (threads, or clients like replicas) the scenario ran; {@code heapBytesPerLock} the
 * client's heap per held lock, where locks are held in bulk.
 */
record Result(String scenario, String system, Double opsPerSecond, Double p50Micros, Double p99Micros,
        Integer connections, String note, Integer clients, Double heapBytesPerLock) {

    Result(String scenario, String system, Double opsPerSecond, Double p50Micros, Double p99Micros,
            Integer connections, String note) {
        this(scenario, system, opsPerSecond, p50Micros, p99Micros, connections, note, null, null);
    }

    static Result skipped(String scenario, String system, String why) {
        return new Result(scenario, system, null, null, null, null, why);
    }

    Result withClients(int count) {
        return new Result(scenario, system, opsPerSecond, p50Micros, p99Micros, connections, note, count,
                heapBytesPerLock);
    }

    String json() {
        return String.format(Locale.ROOT,
                "{\"scenario\":%s,\"system\":%s,\"opsPerSecond\":%s,\"p50Micros\":%s,\"p99Micros\":%s,"
                        + "\"connections\":%s,\"clients\":%s,\"heapBytesPerLock\":%s,\"note\":%s}",
                quote(scenario), quote(system), number(opsPerSecond), number(p50Micros), number(p99Micros),
                connections == null ? "null" : connections.toString(), clients == null ? "null" : clients.toString(),
                number(heapBytesPerLock), note == null ? "null" : quote(note));
    }

    private static String number(Double value) {
        return value == null ? "null" : String.format(Locale.ROOT, "%.1f", value);
    }

    private static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }
}
