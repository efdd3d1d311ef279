"""Caption dataset loaders on small fixture files, good and broken."""

import csv
import json
from pathlib import Path

import pytest

from sightline.indexer.datasets import NO_SPLIT, detect_format, load_annotations, load_named
from sightline.search.errors import DatasetError
from tests.helpers import photo


def _images(folder: Path, names) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        photo(i).save(folder / name)
    return folder


def _karpathy(path: Path, entries) -> Path:
    path.write_text(json.dumps({"dataset": "flickr30k", "images": entries}))
    return path


def _entry(name, split, captions, **extra):
    return {"filename": name, "split": split, "sentences": [{"raw": c, "tokens": c.split()} for c in captions], **extra}


def test_karpathy_json(tmp_path):
    images = _images(tmp_path / "flickr30k-images", ["1.jpg", "2.jpg", "3.jpg"])
    ann = _karpathy(tmp_path / "dataset_flickr30k.json", [
        _entry("1.jpg", "train", ["a dog", "a brown dog"]),
        _entry("2.jpg", "test", ["a cat"]),
        _entry("3.jpg", "val", ["  a bird  ", ""]),
    ])
    ds = load_annotations(ann, images)
    assert detect_format(ann) == "karpathy"
    assert ds.splits() == {"train": 1, "test": 1, "val": 1}
    image, captions, split = ds.items[0]  # unpacks as (image file, [captions], split)
    assert image == str(images / "1.jpg") and captions == ["a dog", "a brown dog"] and split == "train"
    assert ds.items[2].captions == ["a bird"]  # stripped, empty dropped
    test = ds.split("test")
    assert [i.image for i in test] == [str(images / "2.jpg")]
    ds.check_images()


def test_karpathy_coco_filepath(tmp_path):
    _images(tmp_path / "val2014", ["COCO_val2014_1.jpg"])
    _karpathy(tmp_path / "dataset_coco.json", [
        _entry("COCO_val2014_1.jpg", "test", ["a b", "c d", "e f", "g h", "i j", "k l"], filepath="val2014"),
    ])
    ds = load_named("coco", tmp_path)
    assert ds.items[0].image == str(tmp_path / "val2014" / "COCO_val2014_1.jpg")
    assert len(ds.items[0].captions) == 6
    ds.check_images()


def test_flickr30k_csv(tmp_path):
    images = _images(tmp_path / "flickr30k-images", ["10.jpg", "11.jpg"])
    ann = tmp_path / "flickr_annotations_30k.csv"
    with open(ann, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["raw", "sentids", "split", "filename", "img_id"])
        writer.writerow([json.dumps([f"caption {i}, with a comma" for i in range(5)]), "[0,1,2,3,4]", "test",
                         "10.jpg", 0])
        writer.writerow([json.dumps(["x"] * 5), "[5,6,7,8,9]", "train", "11.jpg", 1])
    assert detect_format(ann) == "flickr-csv"
    ds = load_named("flickr30k", tmp_path)
    assert ds.splits() == {"test": 1, "train": 1}
    assert ds.items[0].captions[0] == "caption 0, with a comma" and len(ds.items[0].captions) == 5
    assert ds.items[0].image == str(images / "10.jpg")


def test_flickr30k_prefers_karpathy_json(tmp_path):
    _images(tmp_path / "flickr30k-images", ["1.jpg"])
    _karpathy(tmp_path / "dataset_flickr30k.json", [_entry("1.jpg", "test", ["json caption"])])
    (tmp_path / "flickr_annotations_30k.csv").write_text('raw,split,filename\n"[""csv caption""]",test,1.jpg\n')
    assert load_named("flickr30k", tmp_path).items[0].captions == ["json caption"]


def test_generic_csv_groups_rows_and_keeps_order(tmp_path):
    images = _images(tmp_path / "pics", ["b.jpg", "a.jpg", "sub/c.png"])
    ann = tmp_path / "captions.csv"
    ann.write_text("image,caption\nb.jpg,first b\na.jpg,only a\nb.jpg,second b\nsub/c.png,\"c, quoted\"\n")
    assert detect_format(ann) == "csv"
    ds = load_annotations(ann, images)
    assert [(Path(i.image).name, i.captions, i.split) for i in ds] == [
        ("b.jpg", ["first b", "second b"], NO_SPLIT), ("a.jpg", ["only a"], NO_SPLIT),
        ("c.png", ["c, quoted"], NO_SPLIT)]
    assert not ds.has_splits
    assert ds.split("all") is ds


def test_generic_csv_with_split_and_other_column_names(tmp_path):
    ann = tmp_path / "c.csv"
    ann.write_text("filepath,text,split\nx.jpg,one,train\ny.jpg,two,test\n")
    ds = load_annotations(ann, tmp_path)
    assert ds.splits() == {"train": 1, "test": 1}


def test_generic_jsonl(tmp_path):
    ann = tmp_path / "c.jsonl"
    ann.write_text("\n".join([
        json.dumps({"image": "x.jpg", "caption": "one"}),
        "",
        json.dumps({"image": "y.jpg", "captions": ["two", "three"], "split": "test"}),
        json.dumps({"image": "/abs/z.jpg", "text": "four"}),
    ]))
    ds = load_annotations(ann, tmp_path)
    assert [i.captions for i in ds] == [["one"], ["two", "three"], ["four"]]
    assert ds.items[1].split == "test" and ds.items[2].image == "/abs/z.jpg"


# ------------------------------------------------------------- broken files
@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable JSON file"),
    ('{"annotations": []}', 'top-level "images" list'),
    ('{"images": [{"split": "test", "sentences": []}]}', 'images\\[0\\]: no "filename"'),
    ('{"images": [{"filename": "a.jpg", "sentences": "x"}]}', '"sentences" must be a list'),
    ('{"images": [{"filename": "a.jpg", "sentences": [{"raw": "  "}]}]}', "a.jpg.*no captions"),
    ('{"images": []}', "lists no images"),
])
def test_broken_karpathy(tmp_path, content, message):
    ann = tmp_path / "dataset_flickr30k.json"
    ann.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_annotations(ann, tmp_path)


@pytest.mark.parametrize("content, message", [
    ('raw,split,filename\n"not json",test,1.jpg\n', "line 2.*JSON list"),
    ('raw,split,filename\n"[1, 2]",test,1.jpg\n', "list of strings"),
])
def test_broken_flickr_csv(tmp_path, content, message):
    ann = tmp_path / "flickr_annotations_30k.csv"
    ann.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_annotations(ann, tmp_path)


def test_broken_generic_files(tmp_path):
    bad = tmp_path / "a.csv"
    bad.write_text("picture,words\nx.jpg,hello\n")
    with pytest.raises(DatasetError, match="no image path column"):
        load_annotations(bad, tmp_path)
    bad.write_text("image,caption\n,hello\n")
    with pytest.raises(DatasetError, match="line 2: empty image path"):
        load_annotations(bad, tmp_path)
    bad.write_text("image,caption,split\nx.jpg,a,train\nx.jpg,b,test\n")
    with pytest.raises(DatasetError, match="split 'train' earlier and 'test' here"):
        load_annotations(bad, tmp_path)
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"image": "x.jpg", "caption": "a"}\n[1, 2]\n')
    with pytest.raises(DatasetError, match="line 2: expected a JSON object"):
        load_annotations(jsonl, tmp_path)
    jsonl.write_text('{"image": "x.jpg", "caption": "a"}\n{oops\n')
    with pytest.raises(DatasetError, match="line 2: not valid JSON"):
        load_annotations(jsonl, tmp_path)
    with pytest.raises(DatasetError, match="cannot tell the format"):
        other = tmp_path / "c.xml"
        other.write_text("<x/>")
        load_annotations(other, tmp_path)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetError, match="annotation file .*nope.json does not exist"):
        load_annotations(tmp_path / "nope.json", tmp_path)


def test_missing_split_names_the_available_ones(tmp_path):
    ann = _karpathy(tmp_path / "d.json", [_entry("1.jpg", "train", ["a"]), _entry("2.jpg", "val", ["b"])])
    with pytest.raises(DatasetError, match=r"no split 'test'; its splits are: train \(1 images\), val \(1 images\)"):
        load_annotations(ann, tmp_path).split("test")


def test_missing_images_are_reported(tmp_path):
    images = _images(tmp_path / "imgs", ["1.jpg"])
    ann = _karpathy(tmp_path / "d.json", [_entry(f"{i}.jpg", "test", ["a"]) for i in (1, 2, 3)])
    with pytest.raises(DatasetError, match=r"2 of 3 images .* missing from .*imgs \(e.g. .*2.jpg, .*3.jpg\)"):
        load_annotations(ann, images).check_images()
    with pytest.raises(DatasetError, match="none of the 3 images .* Is the image folder right"):
        load_annotations(ann, tmp_path).check_images()
    with pytest.raises(DatasetError, match="image folder .*nowhere does not exist"):
        load_annotations(ann, tmp_path / "nowhere").check_images()


def test_named_dataset_says_what_is_missing(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder .* does not exist"):
        load_named("flickr30k", tmp_path / "none")
    with pytest.raises(DatasetError, match="no flickr30k annotations .*dataset_flickr30k.json or "
                                           "flickr_annotations_30k.csv"):
        load_named("flickr30k", tmp_path)
    _karpathy(tmp_path / "dataset_flickr30k.json", [_entry("1.jpg", "test", ["a"])])
    with pytest.raises(DatasetError, match="no flickr30k image folder .*flickr30k-images.*unpack"):
        load_named("flickr30k", tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        load_named("imagenet", tmp_path)
