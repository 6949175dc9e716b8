package io.dbsync.bridge;

import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import org.apache.kafka.connect.data.Field;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.source.SourceRecord;

/**
 * Encodes Debezium {@link SourceRecord}s into the compact batch form that crosses into Rust.
 *
 * <p>The layout is the contract with {@code src/capture/wire.rs}; change both together. All
 * integers are little-endian. A batch is a sequence of entries:
 *
 * <pre>
 *   SCHEMA entry: u8 1, u32 schema_id, u32 len, UTF-8 JSON {"table","topic","key","row"}
 *   EVENT  entry: u8 2, u32 schema_id, u32 len, body
 *
 *   body   := u8 op, u8 flags, flags&EXT ? u8 flags2, i64 ts_us,
 *             flags&PG_POSITION ? (u64 commit_lsn, u64 change_lsn) : str position,
 *             flags&TX ? str tx, flags&KEY ? struct(key), flags&BEFORE ? struct(row),
 *             flags&AFTER ? struct(row), flags2&OLD_KEY ? struct(key)
 *   str    := varint len, UTF-8 bytes
 *   struct := null bitmap (ceil(fields/8) bytes, bit set = null), then each non-null field's value
 *   value  := int8: 1 byte | int16/32/64: zigzag varint | float32/64: IEEE bits, 4/8 bytes
 *           | boolean: 1 byte | string: str | bytes: varint len, bytes
 *           | Decimal (bytes named org.apache.kafka.connect.data.Decimal): zigzag varint scale,
 *             varint len, unscaled two's-complement big-endian bytes
 *           | array: varint n, n x (u8 present, value) | map: varint n, n x (u8, key, u8, value)
 *           | struct: struct
 * </pre>
 *
 * flags2 (present only when flags has EXT, so bodies written before it still read): OLD_KEY, the
 * create half of an update that changed the key carries the old key (Debezium's
 * {@code __debezium.oldkey} header); TABLE_SNAPSHOT_LAST, the last row of a table's initial
 * (blocking) snapshot; INCREMENTAL, a row of an incremental (signalled) snapshot; NEW_KEY, the
 * delete half of an update that changed the key (Debezium's {@code __debezium.newkey} header): its
 * create half follows.
 *
 * <p>A schema entry precedes the first event that uses it in the JVM's lifetime; Rust keeps the
 * mapping from these ids to the journal's own schema ids. Schemas are found by identity first
 * (Debezium reuses one Schema object per table version), so the JSON is built once per version.
 */
final class BatchEncoder {
  static final byte SCHEMA = 1;
  static final byte EVENT = 2;

  static final int SNAPSHOT = 1;
  static final int SNAPSHOT_LAST = 2;
  static final int PG_POSITION = 4;
  static final int TX = 8;
  static final int KEY = 16;
  static final int BEFORE = 32;
  static final int AFTER = 64;
  static final int EXT = 128;
  static final int OLD_KEY = 1;
  static final int TABLE_SNAPSHOT_LAST = 2;
  static final int INCREMENTAL = 4;
  static final int NEW_KEY = 8;

  private static final String OLD_KEY_HEADER = "__debezium.oldkey";
  private static final String NEW_KEY_HEADER = "__debezium.newkey";

  private static final String DECIMAL = "org.apache.kafka.connect.data.Decimal";
  private static final String CONNECT_DATE = "org.apache.kafka.connect.data.Date";
  private static final String CONNECT_TIME = "org.apache.kafka.connect.data.Time";
  private static final long MILLIS_PER_DAY = 86_400_000L;

  private byte[] buf = new byte[1 << 20];
  private int len;
  private int events;

  private final IdentityHashMap<Schema, Entry> byIdentity = new IdentityHashMap<>();
  private final Map<String, Entry> byJson = new HashMap<>();
  private int nextSchemaId = 1;

  void reset() {
    len = 0;
    events = 0;
  }

  /** Gives back a buffer that one huge row grew far beyond a piece (call after reset). */
  void trim() {
    if (buf.length > 2 * Bridge.PIECE_BYTES) {
      buf = new byte[1 << 20];
    }
  }

  byte[] buffer() {
    return buf;
  }

  int length() {
    return len;
  }

  int events() {
    return events;
  }

  /** Appends one record; records that are not row changes (heartbeats, tombstones) are skipped. */
  void add(SourceRecord record) {
    Schema valueSchema = record.valueSchema();
    Object value = record.value();
    if (valueSchema == null || !(value instanceof Struct)) {
      return;
    }
    Entry entry = entryFor(record, (Struct) value);
    if (entry == null) {
      return;
    }
    Struct envelope = (Struct) value;
    String op = envelope.getString("op");
    if (op == null || op.isEmpty()) {
      return;
    }
    Struct source = entry.source == null ? null : (Struct) envelope.get(entry.source);
    Object before = envelope.get(entry.before);
    Object after = envelope.get(entry.after);
    Object key = record.key();

    int flags = 0;
    int flags2 = 0;
    String snapshot = source == null ? null : stringOrNull(source, entry.snapshot);
    if (snapshot != null && !snapshot.equals("false")) {
      flags |= SNAPSHOT;
      if (snapshot.equals("last")) {
        flags |= SNAPSHOT_LAST;
      }
      if (snapshot.equals("last") || snapshot.equals("last_in_data_collection")) {
        flags2 |= TABLE_SNAPSHOT_LAST;
      }
      if (snapshot.equals("incremental")) {
        flags2 |= INCREMENTAL;
      }
    }
    Struct oldKey = oldKey(record, entry.keySchema);
    if (oldKey != null) {
      flags2 |= OLD_KEY;
    }
    if (record.headers() != null && record.headers().lastWithName(NEW_KEY_HEADER) != null) {
      flags2 |= NEW_KEY;
    }
    if (flags2 != 0) {
      flags |= EXT;
    }
    Object lsn = source == null || entry.lsn == null ? null : source.get(entry.lsn);
    if (lsn instanceof Long) {
      flags |= PG_POSITION;
    }
    String tx = source == null ? null : transactionId(source, entry);
    if (tx != null) {
      flags |= TX;
    }
    if (key instanceof Struct && entry.keySchema != null) {
      flags |= KEY;
    }
    if (before instanceof Struct) {
      flags |= BEFORE;
    }
    if (after instanceof Struct) {
      flags |= AFTER;
    }

    putByte(EVENT);
    putInt(entry.id);
    int lengthAt = len;
    putInt(0);
    int bodyStart = len;
    putByte((byte) op.charAt(0));
    putByte((byte) flags);
    if (flags2 != 0) {
      putByte((byte) flags2);
    }
    putLong(commitMicros(source, entry, envelope));
    if ((flags & PG_POSITION) != 0) {
      putLong(firstOfSequence(stringOrNull(source, entry.sequence)));
      putLong((Long) lsn);
    } else {
      putString(source == null ? "" : binlogPosition(source, entry));
    }
    if (tx != null) {
      putString(tx);
    }
    if ((flags & KEY) != 0) {
      putStruct(entry.keySchema, (Struct) key);
    }
    if ((flags & BEFORE) != 0) {
      putStruct(entry.rowSchema, (Struct) before);
    }
    if ((flags & AFTER) != 0) {
      putStruct(entry.rowSchema, (Struct) after);
    }
    if (oldKey != null) {
      putStruct(entry.keySchema, oldKey);
    }
    patchInt(lengthAt, len - bodyStart);
    events++;
  }

  /**
   * The old key of the create half of a key-changing update (the {@code __debezium.oldkey}
   * header), when its fields are the key schema's, in order; null otherwise.
   */
  private static Struct oldKey(SourceRecord record, Schema keySchema) {
    if (keySchema == null || record.headers() == null) {
      return null;
    }
    Header header = record.headers().lastWithName(OLD_KEY_HEADER);
    if (header == null || !(header.value() instanceof Struct)) {
      return null;
    }
    Struct old = (Struct) header.value();
    List<Field> want = keySchema.fields();
    List<Field> have = old.schema().fields();
    if (want.size() != have.size()) {
      return null;
    }
    for (int i = 0; i < want.size(); i++) {
      if (!want.get(i).name().equals(have.get(i).name())) {
        return null;
      }
    }
    return old;
  }

  // ---- schemas -------------------------------------------------------------------------

  /** What is known about one (key schema, envelope schema) version, resolved once. */
  private static final class Entry {
    int id;
    Schema keySchema;
    Schema rowSchema;
    Field before;
    Field after;
    Field source;
    Field snapshot;
    Field lsn;
    Field sequence;
    Field tsUs;
    Field tsMs;
    Field txId;
    Field gtid;
    Field file;
    Field pos;
    Field row;
    Field envelopeTsMs;
  }

  private Entry entryFor(SourceRecord record, Struct envelope) {
    Schema valueSchema = record.valueSchema();
    Entry entry = byIdentity.get(valueSchema);
    if (entry != null && entry.keySchema == record.keySchema()) {
      return entry;
    }
    Field before = valueSchema.field("before");
    Field after = valueSchema.field("after");
    Field op = valueSchema.field("op");
    if (before == null || after == null || op == null) {
      return null; // not a row-change envelope: heartbeat, schema change, transaction marker
    }
    Field sourceField = valueSchema.field("source");
    Struct source = sourceField == null ? null : (Struct) envelope.get(sourceField);
    String table = tableName(source, record.topic());
    String json =
        "{\"table\":"
            + SchemaJson.quote(table)
            + ",\"topic\":"
            + SchemaJson.quote(record.topic())
            + ",\"key\":"
            + SchemaJson.of(record.keySchema())
            + ",\"row\":"
            + SchemaJson.of(after.schema())
            + "}";
    entry = byJson.get(json);
    if (entry == null) {
      entry = new Entry();
      entry.id = nextSchemaId++;
      byte[] bytes = json.getBytes(StandardCharsets.UTF_8);
      putByte(SCHEMA);
      putInt(entry.id);
      putInt(bytes.length);
      putBytes(bytes, 0, bytes.length);
      byJson.put(json, entry);
    }
    entry.keySchema = record.keySchema();
    entry.rowSchema = after.schema();
    entry.before = before;
    entry.after = after;
    entry.source = sourceField;
    entry.envelopeTsMs = valueSchema.field("ts_ms");
    Schema sourceSchema = sourceField == null ? null : sourceField.schema();
    if (sourceSchema != null) {
      entry.snapshot = sourceSchema.field("snapshot");
      entry.lsn = sourceSchema.field("lsn");
      entry.sequence = sourceSchema.field("sequence");
      entry.tsUs = sourceSchema.field("ts_us");
      entry.tsMs = sourceSchema.field("ts_ms");
      entry.txId = sourceSchema.field("txId");
      entry.gtid = sourceSchema.field("gtid");
      entry.file = sourceSchema.field("file");
      entry.pos = sourceSchema.field("pos");
      entry.row = sourceSchema.field("row");
    }
    byIdentity.put(valueSchema, entry);
    return entry;
  }

  /** {@code schema.table} for PostgreSQL, {@code db.table} for MySQL; else the topic's tail. */
  private static String tableName(Struct source, String topic) {
    if (source != null) {
      Schema s = source.schema();
      String table = s.field("table") == null ? null : source.getString("table");
      String schema = s.field("schema") == null ? null : source.getString("schema");
      String db = s.field("db") == null ? null : source.getString("db");
      if (table != null && schema != null) {
        return schema + "." + table;
      }
      if (table != null && db != null) {
        return db + "." + table;
      }
    }
    int dot = topic.indexOf('.');
    return dot < 0 ? topic : topic.substring(dot + 1);
  }

  // ---- source fields -------------------------------------------------------------------

  private static String stringOrNull(Struct source, Field field) {
    if (field == null) {
      return null;
    }
    Object v = source.get(field);
    return v == null ? null : v.toString();
  }

  private static long commitMicros(Struct source, Entry entry, Struct envelope) {
    if (source != null) {
      Object us = entry.tsUs == null ? null : source.get(entry.tsUs);
      if (us instanceof Long) {
        return (Long) us;
      }
      Object ms = entry.tsMs == null ? null : source.get(entry.tsMs);
      if (ms instanceof Long) {
        return (Long) ms * 1000L;
      }
    }
    Object ms = entry.envelopeTsMs == null ? null : envelope.get(entry.envelopeTsMs);
    return ms instanceof Long ? (Long) ms * 1000L : 0L;
  }

  private static String transactionId(Struct source, Entry entry) {
    String tx = stringOrNull(source, entry.txId);
    return tx != null ? tx : stringOrNull(source, entry.gtid);
  }

  private static String binlogPosition(Struct source, Entry entry) {
    String file = stringOrNull(source, entry.file);
    String pos = stringOrNull(source, entry.pos);
    if (file == null || pos == null) {
      return "";
    }
    String row = stringOrNull(source, entry.row);
    return file + ":" + pos + ":" + (row == null ? "0" : row);
  }

  /**
   * The first element of Debezium's PostgreSQL {@code sequence}, {@code ["<last commit
   * LSN>","<change LSN>"]}; 0 when absent or null.
   */
  static long firstOfSequence(String sequence) {
    if (sequence == null) {
      return 0L;
    }
    int i = sequence.indexOf('[');
    if (i < 0) {
      return 0L;
    }
    i++;
    while (i < sequence.length() && sequence.charAt(i) == ' ') {
      i++;
    }
    if (i >= sequence.length() || sequence.charAt(i) != '"') {
      return 0L; // null
    }
    long v = 0;
    for (i++; i < sequence.length(); i++) {
      char c = sequence.charAt(i);
      if (c < '0' || c > '9') {
        break;
      }
      v = v * 10 + (c - '0');
    }
    return v;
  }

  // ---- values --------------------------------------------------------------------------

  private void putStruct(Schema schema, Struct struct) {
    List<Field> fields = schema.fields();
    int n = fields.size();
    int bitmapAt = len;
    int bitmapLen = (n + 7) >>> 3;
    ensure(bitmapLen);
    Arrays.fill(buf, len, len + bitmapLen, (byte) 0);
    len += bitmapLen;
    for (int i = 0; i < n; i++) {
      Field f = fields.get(i);
      // Struct.get(Field) substitutes the column default for null; a null must stay null.
      Object v = f.schema().defaultValue() == null ? struct.get(f) : struct.getWithoutDefault(f.name());
      if (v == null) {
        buf[bitmapAt + (i >>> 3)] |= (byte) (1 << (i & 7));
      } else {
        putValue(f.schema(), v);
      }
    }
  }

  private void putValue(Schema schema, Object v) {
    switch (schema.type()) {
      case INT8:
        putByte(((Number) v).byteValue());
        break;
      case INT16:
      case INT32:
      case INT64:
        putVarLong(zigzag(integral(schema, v)));
        break;
      case FLOAT32:
        putInt(Float.floatToRawIntBits(((Number) v).floatValue()));
        break;
      case FLOAT64:
        putLong(Double.doubleToRawLongBits(((Number) v).doubleValue()));
        break;
      case BOOLEAN:
        putByte((byte) (((Boolean) v) ? 1 : 0));
        break;
      case STRING:
        putString(v.toString());
        break;
      case BYTES:
        if (v instanceof BigDecimal) {
          BigDecimal d = (BigDecimal) v;
          putVarLong(zigzag(d.scale()));
          byte[] unscaled = d.unscaledValue().toByteArray();
          putVarLong(unscaled.length);
          putBytes(unscaled, 0, unscaled.length);
        } else if (v instanceof byte[]) {
          byte[] b = (byte[]) v;
          putVarLong(b.length);
          putBytes(b, 0, b.length);
        } else {
          ByteBuffer bb = ((ByteBuffer) v).duplicate();
          int n = bb.remaining();
          putVarLong(n);
          ensure(n);
          bb.get(buf, len, n);
          len += n;
        }
        break;
      case ARRAY:
        {
          List<?> list = (List<?>) v;
          putVarLong(list.size());
          Schema item = schema.valueSchema();
          for (Object e : list) {
            putOptional(item, e);
          }
          break;
        }
      case MAP:
        {
          Map<?, ?> map = (Map<?, ?>) v;
          putVarLong(map.size());
          for (Map.Entry<?, ?> e : map.entrySet()) {
            putOptional(schema.keySchema(), e.getKey());
            putOptional(schema.valueSchema(), e.getValue());
          }
          break;
        }
      case STRUCT:
        putStruct(schema, (Struct) v);
        break;
      default:
        throw new IllegalArgumentException("unsupported Connect type " + schema.type());
    }
  }

  private void putOptional(Schema schema, Object v) {
    if (v == null) {
      putByte((byte) 0);
    } else {
      putByte((byte) 1);
      putValue(schema, v);
    }
  }

  /** Integers, and the Connect logical types that carry a java.util.Date instead. */
  private static long integral(Schema schema, Object v) {
    if (v instanceof java.util.Date) {
      long millis = ((java.util.Date) v).getTime();
      String name = schema.name();
      if (CONNECT_DATE.equals(name)) {
        return Math.floorDiv(millis, MILLIS_PER_DAY);
      }
      if (CONNECT_TIME.equals(name)) {
        return Math.floorMod(millis, MILLIS_PER_DAY);
      }
      return millis;
    }
    return ((Number) v).longValue();
  }

  // ---- bytes ---------------------------------------------------------------------------

  private static long zigzag(long v) {
    return (v << 1) ^ (v >> 63);
  }

  private void ensure(int extra) {
    if (len + extra > buf.length) {
      buf = Arrays.copyOf(buf, Math.max(buf.length * 2, len + extra));
    }
  }

  private void putByte(byte b) {
    ensure(1);
    buf[len++] = b;
  }

  private void putInt(int v) {
    ensure(4);
    buf[len] = (byte) v;
    buf[len + 1] = (byte) (v >>> 8);
    buf[len + 2] = (byte) (v >>> 16);
    buf[len + 3] = (byte) (v >>> 24);
    len += 4;
  }

  private void patchInt(int at, int v) {
    buf[at] = (byte) v;
    buf[at + 1] = (byte) (v >>> 8);
    buf[at + 2] = (byte) (v >>> 16);
    buf[at + 3] = (byte) (v >>> 24);
  }

  private void putLong(long v) {
    ensure(8);
    for (int i = 0; i < 8; i++) {
      buf[len + i] = (byte) (v >>> (8 * i));
    }
    len += 8;
  }

  private void putVarLong(long v) {
    ensure(10);
    while ((v & ~0x7FL) != 0) {
      buf[len++] = (byte) ((v & 0x7F) | 0x80);
      v >>>= 7;
    }
    buf[len++] = (byte) v;
  }

  private void putBytes(byte[] b, int off, int n) {
    ensure(n);
    System.arraycopy(b, off, buf, len, n);
    len += n;
  }

  private void putString(String s) {
    // ASCII fast path: most identifiers and many values need no encoder.
    int n = s.length();
    ensure(10 + n);
    boolean ascii = true;
    for (int i = 0; i < n; i++) {
      if (s.charAt(i) >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) {
      putVarLong(n);
      for (int i = 0; i < n; i++) {
        buf[len++] = (byte) s.charAt(i);
      }
      return;
    }
    byte[] b = s.getBytes(StandardCharsets.UTF_8);
    putVarLong(b.length);
    putBytes(b, 0, b.length);
  }
}
