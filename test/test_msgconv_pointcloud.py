"""sensor_msgs/PointCloud2 → (N, K) float32 with real ROS 2 (Humble) message classes from the rosbags type store
and hand-built layouts (bytes packed with ``struct``, independently of the converter)."""

from __future__ import annotations

import array
import struct

import numpy as np
import pytest

from regionadapt_ros.core.diagnostics import CountedWarnings
from regionadapt_ros.core.errors import MessageConversionError
from regionadapt_ros.core.msgconv import (
    build_header,
    build_pointcloud2,
    build_pointfield,
    pointcloud2_to_array,
    read_pointcloud2,
)
from regionadapt_ros.core.msgconv.pointcloud import _strides_for

# PointField datatype → struct format character.
STRUCT_CHAR = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
NAN = float("nan")


def packed_cloud(types, layout, points, *, point_step, height=1, row_pad=0, big=False, is_dense=True,
                 data_kind="numpy"):
    """A PointCloud2 whose bytes are packed point by point with ``struct``.

    ``layout``: [(name, offset, datatype, count)]; ``points``: one tuple of values per point, in layout order
    (``count`` values for a field with count > 1); padding bytes are 0xAB.
    """
    order = ">" if big else "<"
    width = len(points) // height
    row_step = width * point_step + row_pad
    data = bytearray(b"\xab" * (row_step * height))
    for index, values in enumerate(points):
        row, col = divmod(index, width)
        base = row * row_step + col * point_step
        position = 0
        for _name, offset, datatype, count in layout:
            fmt = order + STRUCT_CHAR[datatype] * count
            struct.pack_into(fmt, data, base + offset, *values[position:position + count])
            position += count
    payload = {"numpy": np.frombuffer(bytes(data), np.uint8).copy(), "bytes": bytes(data),
               "array.array": array.array("B", bytes(data))}[data_kind]
    return types("sensor_msgs/msg/PointCloud2")(
        header=build_header(types, 4.0, "lidar"), height=height, width=width,
        fields=[build_pointfield(types, n, o, d, c) for n, o, d, c in layout],
        is_bigendian=big, point_step=point_step, row_step=row_step, data=payload, is_dense=is_dense,
    )


CARLA = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1)]


def test_carla_layout_round_trips_through_cdr(store, types):
    rng = np.random.default_rng(0)
    points = rng.normal(0, 30, size=(5000, 4)).astype(np.float32)
    msg = build_pointcloud2(types, points, ["x", "y", "z", "intensity"], 10.0, "ego/lidar")
    assert msg.point_step == 16 and msg.is_dense
    back = store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
    out = pointcloud2_to_array(back)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, points)
    assert not np.shares_memory(out, back.data)


@pytest.mark.parametrize("data_kind", ["numpy", "bytes", "array.array"])
def test_hand_packed_carla_layout_with_any_data_kind(types, data_kind):
    points = [(1.0, 2.0, 3.0, 0.5), (-4.0, 5.5, -6.0, 1.0), (7.0, 8.0, 9.0, 0.0)]
    msg = packed_cloud(types, CARLA, points, point_step=16, data_kind=data_kind)
    np.testing.assert_array_equal(pointcloud2_to_array(msg), np.array(points, np.float32))


def test_fields_in_any_order_come_back_in_requested_order(types):
    layout = [("intensity", 0, 7, 1), ("z", 4, 7, 1), ("y", 8, 7, 1), ("x", 12, 7, 1)]
    points = [(0.1, 3.0, 2.0, 1.0), (0.2, 6.0, 5.0, 4.0)]
    msg = packed_cloud(types, layout, points, point_step=16)
    np.testing.assert_array_equal(pointcloud2_to_array(msg), np.array([[1, 2, 3, 0.1], [4, 5, 6, 0.2]], np.float32))
    np.testing.assert_array_equal(pointcloud2_to_array(msg, fields=("z", "x")), [[3, 1], [6, 4]])


def test_mixed_datatypes_with_padded_point_step(types):
    # An Ouster-like layout: float32 xyz, 4 padding bytes, float32 intensity, uint32 t, uint16 reflectivity,
    # uint16 ring, padding to 48 B.
    layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 16, 7, 1), ("t", 20, 6, 1),
              ("reflectivity", 24, 4, 1), ("ring", 26, 4, 1)]
    points = [(1.5, -2.5, 0.25, 100.0, 123456, 900, 63), (3.0, 4.0, -1.0, 7.0, 42, 65535, 0)]
    msg = packed_cloud(types, layout, points, point_step=48)
    out = pointcloud2_to_array(msg, fields=("x", "y", "z", "intensity", "ring", "reflectivity", "t"))
    np.testing.assert_array_equal(out, [[1.5, -2.5, 0.25, 100, 63, 900, 123456], [3, 4, -1, 7, 0, 65535, 42]])


@pytest.mark.parametrize("datatype,value", [(1, -100), (2, 200), (3, -30000), (4, 60000), (5, -2_000_000),
                                            (6, 4_000_000), (7, 1.5), (8, -2.25)])
@pytest.mark.parametrize("big", [False, True])
def test_every_pointfield_datatype_in_either_byte_order(types, datatype, value, big):
    layout = [("x", 0, 8, 1), ("y", 8, 8, 1), ("z", 16, 8, 1), ("intensity", 24, datatype, 1)]
    msg = packed_cloud(types, layout, [(1.0, 2.0, 3.0, value)], point_step=32, big=big)
    np.testing.assert_array_equal(pointcloud2_to_array(msg), [[1.0, 2.0, 3.0, value]])


def test_big_endian_carla_layout(types):
    points = [(1.0, -2.0, 3.5, 0.75), (10.0, 20.0, 30.0, 0.0)]
    msg = packed_cloud(types, CARLA, points, point_step=16, big=True)
    assert bytes(msg.data[:4]) == struct.pack(">f", 1.0)
    np.testing.assert_array_equal(pointcloud2_to_array(msg), np.array(points, np.float32))


def test_field_count_and_element_selection(types):
    layout = [("xyz", 0, 7, 3), ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 2, 3)]
    points = [(1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 10, 20, 30)]
    msg = packed_cloud(types, layout, points, point_step=16)
    out = pointcloud2_to_array(msg, fields=("x", "rgb", "rgb[2]", "xyz[1]"))
    np.testing.assert_array_equal(out, [[1.0, 10, 30, 2.0]])
    with pytest.raises(MessageConversionError) as err:
        pointcloud2_to_array(msg, fields=("x", "rgb[3]"))
    assert err.value.field == "fields[4].count" and "'rgb[3]'" in str(err.value)


def test_organised_cloud_with_row_padding_keeps_row_major_order(types):
    points = [(float(i), float(10 + i), float(20 + i), float(i) / 10) for i in range(6)]
    points[4] = (NAN, NAN, NAN, 0.0)  # an organised cloud marks missing returns with NaN
    msg = packed_cloud(types, CARLA, points, point_step=20, height=2, row_pad=8, is_dense=False)
    assert msg.height == 2 and msg.width == 3 and msg.row_step == 3 * 20 + 8
    kept = pointcloud2_to_array(msg, drop_invalid=False)
    assert kept.shape == (6, 4)
    np.testing.assert_array_equal(kept, np.array(points, np.float32))
    reordered = pointcloud2_to_array(msg, fields=("z", "x"), drop_invalid=False)
    np.testing.assert_array_equal(reordered, np.array(points, np.float32)[:, [2, 0]])
    dropped = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(dropped, np.array(points[:4] + points[5:], np.float32))


def test_non_dense_cloud_drops_nan_points_without_a_repair(types):
    points = [(1.0, 2.0, 3.0, 1.0), (NAN, 0.0, 0.0, 1.0), (0.0, float("inf"), 0.0, 1.0), (4.0, 5.0, 6.0, NAN)]
    msg = packed_cloud(types, CARLA, points, point_step=16, is_dense=False)
    warnings = CountedWarnings(log=lambda _m: None)
    result = read_pointcloud2(msg, warnings=warnings)
    # a NaN intensity does not make a point invalid: validity is about geometry
    np.testing.assert_array_equal(result.points[:, :3], [[1, 2, 3], [4, 5, 6]])
    assert result.dropped_invalid == 2 and not result.dense_flag_wrong
    assert warnings.total() == 0


def test_dense_cloud_with_nan_points_is_repaired_and_counted(types):
    points = [(1.0, 2.0, 3.0, 1.0), (NAN, NAN, NAN, 0.0), (4.0, 5.0, 6.0, 2.0)]
    msg = packed_cloud(types, CARLA, points, point_step=16, is_dense=True)
    warnings = CountedWarnings(log=lambda _m: None)
    result = read_pointcloud2(msg, warnings=warnings)
    np.testing.assert_array_equal(result.points, [[1, 2, 3, 1], [4, 5, 6, 2]])
    assert result.dense_flag_wrong and result.dropped_invalid == 1
    assert warnings.count("pointcloud2.dense_with_invalid") == 1
    assert "is_dense" in warnings.last_message("pointcloud2.dense_with_invalid")


def test_only_nan_points_give_an_empty_cloud_and_a_counted_repair(types):
    points = [(NAN, NAN, NAN, 1.0)] * 4
    msg = packed_cloud(types, CARLA, points, point_step=16, is_dense=False)
    warnings = CountedWarnings(log=lambda _m: None)
    out = pointcloud2_to_array(msg, warnings=warnings)
    assert out.shape == (0, 4) and out.dtype == np.float32
    assert warnings.count("pointcloud2.no_valid_points") == 1
    assert "all 4 points" in warnings.last_message("pointcloud2.no_valid_points")


def test_empty_cloud_gives_zero_rows(types):
    msg = packed_cloud(types, CARLA, [], point_step=16)
    warnings = CountedWarnings(log=lambda _m: None)
    out = pointcloud2_to_array(msg, warnings=warnings)
    assert out.shape == (0, 4) and out.dtype == np.float32
    assert warnings.total() == 0


def test_missing_intensity_is_filled_and_reported(types):
    layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)]
    msg = packed_cloud(types, layout, [(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)], point_step=12)
    warnings = CountedWarnings(log=lambda _m: None)
    result = read_pointcloud2(msg, warnings=warnings)
    np.testing.assert_array_equal(result.points, [[1, 2, 3, 0], [4, 5, 6, 0]])
    assert result.missing_fields == ("intensity",)
    assert warnings.count("pointcloud2.missing_field") == 1
    assert "intensity" in warnings.last_message("pointcloud2.missing_field")


# --- bad input ------------------------------------------------------------------------------------------


def test_cloud_without_z_is_refused(types):
    layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("intensity", 8, 7, 1)]
    msg = packed_cloud(types, layout, [(1.0, 2.0, 0.5)], point_step=12)
    with pytest.raises(MessageConversionError) as err:
        pointcloud2_to_array(msg)
    assert err.value.field == "fields"
    assert "required field(s) z missing" in str(err.value) and "sensor_msgs/PointCloud2" in str(err.value)


def test_point_step_smaller_than_its_fields_is_refused(types):
    msg = packed_cloud(types, CARLA, [(1.0, 2.0, 3.0, 4.0)], point_step=16)
    msg.point_step = 12
    msg.row_step = 12
    with pytest.raises(MessageConversionError) as err:
        pointcloud2_to_array(msg)
    assert err.value.field == "point_step"
    assert "smaller than field 'intensity'" in str(err.value)


def test_row_step_smaller_than_a_row_is_refused(types):
    msg = packed_cloud(types, CARLA, [(1.0, 2.0, 3.0, 4.0)] * 4, point_step=16)
    msg.row_step = 40
    with pytest.raises(MessageConversionError) as err:
        pointcloud2_to_array(msg)
    assert err.value.field == "row_step" and "width*point_step" in str(err.value)


def test_data_shorter_than_the_cloud_is_refused(types):
    msg = packed_cloud(types, CARLA, [(1.0, 2.0, 3.0, 4.0)] * 4, point_step=16)
    msg.data = msg.data[:-4]
    with pytest.raises(MessageConversionError) as err:
        pointcloud2_to_array(msg)
    assert err.value.field == "data" and "row_step*height" in str(err.value)


def test_unknown_datatype_of_a_requested_field_is_refused(types):
    layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1)]
    msg = packed_cloud(types, layout, [(1.0, 2.0, 3.0, 4.0)], point_step=16)
    msg.fields[3].datatype = 9
    with pytest.raises(MessageConversionError) as err:
        pointcloud2_to_array(msg)
    assert err.value.field == "fields[3].datatype" and "not a PointField type" in str(err.value)


@pytest.mark.parametrize("fields", [("x", "y", "z", "intensity"), ("intensity", "x")])
def test_misaligned_data_buffer_is_read_correctly(types, fields):
    points = [(1.0, 2.0, 3.0, 0.5), (4.0, 5.0, 6.0, 0.25)]
    msg = packed_cloud(types, CARLA, points, point_step=16)
    shifted = np.empty(msg.data.size + 1, np.uint8)[1:]  # a float32 view of this starts at an odd address
    shifted[:] = msg.data
    msg.data = shifted
    expected = np.array(points, np.float32)[:, ["x", "y", "z", "intensity"].index(fields[0])]
    np.testing.assert_array_equal(pointcloud2_to_array(msg, fields=fields)[:, 0], expected)


# Drivers whose layouts take the general (structured) path: Velodyne's ROS 2 driver (ring uint16, time float32,
# point_step 22) and RoboSense's XYZIRT (uint8 intensity).
VELODYNE = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1), ("ring", 16, 4, 1),
            ("time", 18, 7, 1)]
RSLIDAR = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 2, 1), ("ring", 13, 4, 1),
           ("timestamp", 16, 8, 1)]


@pytest.mark.parametrize(("layout", "point_step"), [(VELODYNE, 22), (RSLIDAR, 24)])
@pytest.mark.parametrize(("height", "n_points", "max_points"), [(1, 1001, 4), (1, 1001, 333), (1, 1001, 1000),
                                                                  (4, 1000, 7), (4, 1000, 249)])
def test_downsampling_any_layout_keeps_the_strided_points(types, layout, point_step, height, n_points, max_points):
    # A point count that is not a multiple of the stride puts the last kept point near the end of the buffer.
    rng = np.random.default_rng(n_points + max_points)
    values = []
    for _ in range(n_points):
        x, y, z = (float(v) for v in rng.normal(0, 20, 3).astype(np.float32))
        values.append((x, y, z, int(rng.integers(0, 256)), int(rng.integers(0, 64)), 0.5))
    msg = packed_cloud(types, layout, values, point_step=point_step, height=height)
    full = pointcloud2_to_array(msg)
    warnings = CountedWarnings()
    result = read_pointcloud2(msg, warnings=warnings, max_points=max_points)
    assert result.downsampled_from == n_points and len(result.points) <= max_points
    assert warnings.count("pointcloud2.downsampled") == 1
    row_stride, col_stride = _strides_for(height, n_points // height, max_points)
    grid = full.reshape(height, n_points // height, 4)
    np.testing.assert_array_equal(result.points, grid[::row_stride, ::col_stride].reshape(-1, 4))


def test_a_requested_field_that_appears_twice_is_refused_and_repeated_padding_is_not(types):
    values = [(1.0, 2.0, 3.0, 0.5, 0.25)] * 3
    twice = packed_cloud(types, [*CARLA, ("intensity", 16, 7, 1)], values, point_step=20)
    with pytest.raises(MessageConversionError, match=r"field 'intensity' appears twice \(fields\[3\] too\)") as err:
        pointcloud2_to_array(twice)
    assert err.value.field == "fields[4].name"
    padded = packed_cloud(types, [*CARLA, ("_", 16, 2, 1), ("_", 17, 2, 1)], [(1.0, 2.0, 3.0, 0.5, 7, 9)] * 3,
                          point_step=20)
    np.testing.assert_array_equal(pointcloud2_to_array(padded), [[1.0, 2.0, 3.0, 0.5]] * 3)


def test_a_requested_field_of_count_zero_is_refused_and_zero_count_padding_is_not(types):
    # sensor_msgs_py refuses a count-0 field; PCL's readers drop count-0 "_" padding.
    zero_z = packed_cloud(types, [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 0), ("intensity", 8, 7, 1)],
                          [(1.0, 2.0, 0.5)] * 3, point_step=12)
    with pytest.raises(MessageConversionError, match=r"field 'z' has count 0") as err:
        pointcloud2_to_array(zero_z)
    assert err.value.field == "fields[2].count"
    padded = packed_cloud(types, [*CARLA, ("_", 16, 7, 0)], [(1.0, 2.0, 3.0, 0.5)] * 3, point_step=16)
    np.testing.assert_array_equal(pointcloud2_to_array(padded), [[1.0, 2.0, 3.0, 0.5]] * 3)
