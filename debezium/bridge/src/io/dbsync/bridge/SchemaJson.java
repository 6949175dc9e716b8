package io.dbsync.bridge;

import java.util.Map;
import org.apache.kafka.connect.data.Field;
import org.apache.kafka.connect.data.Schema;

/**
 * Renders a Connect {@link Schema} as JSON in the shape of Kafka's JsonConverter schemas
 * ({@code type, optional, name, version, parameters, fields | items | keys, values}), which is
 * what the Rust side decodes by. Built once per schema version, never per event.
 */
final class SchemaJson {
  private SchemaJson() {}

  static String of(Schema schema) {
    if (schema == null) {
      return "null";
    }
    StringBuilder sb = new StringBuilder(256);
    append(sb, schema, null);
    return sb.toString();
  }

  private static void append(StringBuilder sb, Schema schema, String fieldName) {
    sb.append('{');
    if (fieldName != null) {
      sb.append("\"field\":").append(quote(fieldName)).append(',');
    }
    sb.append("\"type\":\"").append(schema.type().getName()).append('"');
    sb.append(",\"optional\":").append(schema.isOptional());
    if (schema.name() != null) {
      sb.append(",\"name\":").append(quote(schema.name()));
    }
    if (schema.version() != null) {
      sb.append(",\"version\":").append(schema.version());
    }
    String dflt = defaultJson(schema);
    if (dflt != null) {
      sb.append(",\"default\":").append(dflt);
    }
    Map<String, String> params = schema.parameters();
    if (params != null && !params.isEmpty()) {
      sb.append(",\"parameters\":{");
      boolean first = true;
      for (Map.Entry<String, String> e : new java.util.TreeMap<>(params).entrySet()) {
        if (!first) {
          sb.append(',');
        }
        first = false;
        sb.append(quote(e.getKey())).append(':').append(quote(e.getValue()));
      }
      sb.append('}');
    }
    switch (schema.type()) {
      case STRUCT:
        sb.append(",\"fields\":[");
        boolean first = true;
        for (Field f : schema.fields()) {
          if (!first) {
            sb.append(',');
          }
          first = false;
          append(sb, f.schema(), f.name());
        }
        sb.append(']');
        break;
      case ARRAY:
        sb.append(",\"items\":");
        append(sb, schema.valueSchema(), null);
        break;
      case MAP:
        sb.append(",\"keys\":");
        append(sb, schema.keySchema(), null);
        sb.append(",\"values\":");
        append(sb, schema.valueSchema(), null);
        break;
      default:
        break;
    }
    sb.append('}');
  }

  /**
   * The column default as JSON in the form the wire uses for values (so Rust reads it the same
   * way): integers (dates as days, times and timestamps as their integer units), floats,
   * booleans, strings, decimals as exact text, bytes as hex text. Null when there is none, or
   * for structs, arrays and maps.
   */
  static String defaultJson(Schema schema) {
    Object v = schema.defaultValue();
    if (v == null) {
      return null;
    }
    if (v instanceof java.math.BigDecimal) {
      return quote(((java.math.BigDecimal) v).toPlainString());
    }
    if (v instanceof java.util.Date) {
      long millis = ((java.util.Date) v).getTime();
      String name = schema.name();
      if ("org.apache.kafka.connect.data.Date".equals(name)) {
        return Long.toString(Math.floorDiv(millis, 86_400_000L));
      }
      if ("org.apache.kafka.connect.data.Time".equals(name)) {
        return Long.toString(Math.floorMod(millis, 86_400_000L));
      }
      return Long.toString(millis);
    }
    if (v instanceof Float || v instanceof Double) {
      double d = ((Number) v).doubleValue();
      return Double.isFinite(d) ? Double.toString(d) : quote(Double.toString(d));
    }
    if (v instanceof Number) {
      return Long.toString(((Number) v).longValue());
    }
    if (v instanceof Boolean) {
      return v.toString();
    }
    if (v instanceof String) {
      return quote((String) v);
    }
    byte[] bytes = null;
    if (v instanceof byte[]) {
      bytes = (byte[]) v;
    } else if (v instanceof java.nio.ByteBuffer) {
      java.nio.ByteBuffer bb = ((java.nio.ByteBuffer) v).duplicate();
      bytes = new byte[bb.remaining()];
      bb.get(bytes);
    }
    if (bytes != null) {
      StringBuilder hex = new StringBuilder(bytes.length * 2);
      for (byte b : bytes) {
        hex.append(String.format("%02x", b));
      }
      return quote(hex.toString());
    }
    return null;
  }

  static String quote(String s) {
    if (s == null) {
      return "null";
    }
    StringBuilder sb = new StringBuilder(s.length() + 2).append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"':
          sb.append("\\\"");
          break;
        case '\\':
          sb.append("\\\\");
          break;
        default:
          if (c < 0x20) {
            sb.append(String.format("\\u%04x", (int) c));
          } else {
            sb.append(c);
          }
      }
    }
    return sb.append('"').toString();
  }
}
