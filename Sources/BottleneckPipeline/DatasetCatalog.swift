import Foundation
import BottleneckCore

/// One downloadable file of a dataset.
public struct DatasetFile: Codable, Sendable, Equatable {
    /// Official download URL.
    public var url: String
    /// File name to save it under.
    public var filename: String
    /// SHA-256 of the file, or nil when no trustworthy published value is known. Checked before extraction.
    public var sha256: String?
    /// MD5 as published by torchvision or the dataset authors, or nil. Checked before extraction
    /// (as well as the SHA-256 when both are known). A file with neither is used unverified, and
    /// the fetch says so.
    public var md5: String?
    /// Where the checksums come from, or why they are missing.
    public var note: String?

    /// Encodes unknown checksums as explicit `null` so the manifest shows what is missing.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(url, forKey: .url)
        try c.encode(filename, forKey: .filename)
        try c.encode(sha256, forKey: .sha256)
        try c.encode(md5, forKey: .md5)
        try c.encode(note, forKey: .note)
    }
}

/// A standard small image-classification dataset and how to lay it out as `train|val|test/<class>/`.
public struct DatasetSpec: Codable, Sendable, Equatable {
    /// Short name used on the command line.
    public var name: String
    /// Full title.
    public var title: String
    /// Dataset home page.
    public var homepage: String
    /// Number of classes.
    public var classes: Int
    /// Number of images.
    public var images: Int
    /// Files to download.
    public var files: [DatasetFile]
    /// Layout recipe: `tree`, `class-folders`, `oxford17`, `oxford102`, `pets` or `cub`.
    public var recipe: String
    /// The official splits and how they map onto `train|val|test`.
    public var splits: String
    /// Manual layout steps (shown when the files cannot be downloaded or laid out automatically).
    public var manual: [String]
}

/// The dataset manifest (`Datasets/manifest.json`), compiled in so the CLI needs no data files.
/// A test checks that the committed JSON and this table are identical.
public enum DatasetCatalog {
    /// All datasets, in listing order.
    public static let all: [DatasetSpec] = [
        DatasetSpec(
            name: "hymenoptera", title: "Ants and bees (PyTorch transfer-learning tutorial; an ImageNet subset)",
            homepage: "https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html", classes: 2, images: 398,
            files: [DatasetFile(url: "https://download.pytorch.org/tutorial/hymenoptera_data.zip", filename: "hymenoptera_data.zip",
                                sha256: nil, md5: nil, note: "no checksum is published for this file")],
            recipe: "tree", splits: "the tutorial's own train (244) / val (153) folders, kept as train/ and val/",
            manual: ["unzip hymenoptera_data.zip", "move hymenoptera_data/train and hymenoptera_data/val to DIR/train and DIR/val",
                     "note: train/ants/imageNotFound.gif is a GIF placeholder, not a photo; extract reports it as a failure"]),
        DatasetSpec(
            name: "oxford17", title: "Oxford 17 Category Flower Dataset (Nilsback & Zisserman 2006)",
            homepage: "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/", classes: 17, images: 1360,
            files: [
                DatasetFile(url: "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/17flowers.tgz", filename: "17flowers.tgz",
                            sha256: nil, md5: nil, note: "no checksum is published for this file"),
                DatasetFile(url: "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/datasplits.mat", filename: "datasplits.mat",
                            sha256: nil, md5: nil, note: "official splits trn1..3/val1..3/tst1..3 (MATLAB file)"),
            ],
            recipe: "oxford17",
            splits: "official datasplits.mat holds 3 train/val/test splits (40/20/20 per class); it is a MATLAB file, so the automatic layout is DIR/<NN_Class>/ without splits and the split must be applied by hand (see manual)",
            manual: ["tar xzf 17flowers.tgz  (gives jpg/image_0001.jpg .. image_1360.jpg)",
                     "class k (1-based) is images (k-1)*80+1 .. k*80, names in order: Daffodil Snowdrop LilyValley Bluebell Crocus Iris Tigerlily Tulip Fritillary Sunflower Daisy ColtsFoot Dandelion Cowslip Buttercup Windflower Pansy",
                     "for the official split: python -c \"import scipy.io as s; d=s.loadmat('datasplits.mat'); print(d['trn1'], d['val1'], d['tst1'])\" gives 1-based image numbers for DIR/train, DIR/val, DIR/test"]),
        DatasetSpec(
            name: "oxford102", title: "Oxford 102 Category Flower Dataset (Nilsback & Zisserman 2008)",
            homepage: "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/", classes: 102, images: 8189,
            files: [
                DatasetFile(url: "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz", filename: "102flowers.tgz",
                            sha256: "2d01ecc807db462958cfe3d92f57a8c252b4abd240eb955770201e45f783b246", md5: "52808999861908f626f3c1f4e79d11fa",
                            note: "md5 from torchvision.datasets.Flowers102; sha256 from a third-party DataDeps registration (Julia), not from the authors"),
                DatasetFile(url: "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat", filename: "imagelabels.mat",
                            sha256: nil, md5: "e0620be6f572b9609742df49c70aed4d", note: "md5 from torchvision; no published sha256"),
                DatasetFile(url: "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/setid.mat", filename: "setid.mat",
                            sha256: nil, md5: "a5357ecc9cb78c4bef273ce3793fc85c", note: "md5 from torchvision; no published sha256"),
            ],
            recipe: "oxford102",
            splits: "official setid.mat: trnid (1020) -> train, valid (1020) -> val, tstid (6149) -> test; labels in imagelabels.mat (MATLAB files: laid out by hand, see manual)",
            manual: ["tar xzf 102flowers.tgz  (gives jpg/image_00001.jpg .. image_08189.jpg)",
                     "python -c \"import scipy.io as s; l=s.loadmat('imagelabels.mat')['labels'][0]; d=s.loadmat('setid.mat'); print(l, d['trnid'], d['valid'], d['tstid'])\"",
                     "copy image_%05d.jpg of each id in trnid/valid/tstid to DIR/train|val|test/<label:03d>/"]),
        DatasetSpec(
            name: "caltech101", title: "Caltech-101 (Fei-Fei, Fergus & Perona 2004)",
            homepage: "https://data.caltech.edu/records/mzrjq-6wc02", classes: 101, images: 8677,
            files: [DatasetFile(url: "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip?download=1", filename: "caltech-101.zip",
                                sha256: nil, md5: nil,
                                note: "no published checksum for the zip; torchvision's inner 101_ObjectCategories.tar.gz md5 is b224c7392d521a49829488ab0f1120d9")],
            recipe: "class-folders",
            splits: "no official split; the usual protocol draws 30 train images per class (then up to 50 test) with a fixed seed: laid out as DIR/<class>/ (BACKGROUND_Google left out)",
            manual: ["unzip caltech-101.zip; tar xzf caltech-101/101_ObjectCategories.tar.gz",
                     "move 101_ObjectCategories/<class>/ to DIR/<class>/, leaving out BACKGROUND_Google"]),
        DatasetSpec(
            name: "pets", title: "Oxford-IIIT Pet Dataset (Parkhi et al. 2012)",
            homepage: "https://www.robots.ox.ac.uk/~vgg/data/pets/", classes: 37, images: 7349,
            files: [
                DatasetFile(url: "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", filename: "images.tar.gz",
                            sha256: "67195c5e1c01f1ab5f9b6a5d22b8c27a580d896ece458917e61d459337fa318d", md5: "5c4f3ee8e5d25df40f4fd59a7f44e54c",
                            note: "md5 from torchvision.datasets.OxfordIIITPet; sha256 recorded by a third-party project whose archive matched that md5"),
                DatasetFile(url: "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz", filename: "annotations.tar.gz",
                            sha256: nil, md5: "95a8c909bbe2e81eed6a22bccdf3f68f", note: "md5 from torchvision; no published sha256"),
            ],
            recipe: "pets",
            splits: "official annotations/trainval.txt (3680) -> train, annotations/test.txt (3669) -> test; class = breed (file name without the trailing _<n>)",
            manual: ["tar xzf images.tar.gz; tar xzf annotations.tar.gz",
                     "for each line '<name> <id> <species> <breed>' of annotations/trainval.txt (test.txt): copy images/<name>.jpg to DIR/train/<breed name>/ (DIR/test/...), breed name = <name> without its last _<n>"]),
        DatasetSpec(
            name: "cub200", title: "Caltech-UCSD Birds-200-2011 (Wah et al. 2011)",
            homepage: "https://www.vision.caltech.edu/datasets/cub_200_2011/", classes: 200, images: 11788,
            files: [DatasetFile(url: "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1", filename: "CUB_200_2011.tgz",
                                sha256: nil, md5: "97eceeb196236b17998738112f37df78", note: "md5 as used by common CUB loaders; no published sha256")],
            recipe: "cub",
            splits: "official CUB_200_2011/train_test_split.txt (5994 train / 5794 test) -> train/ and test/",
            manual: ["tar xzf CUB_200_2011.tgz",
                     "join CUB_200_2011/images.txt ('<id> <class dir>/<file>') with train_test_split.txt ('<id> <1=train,0=test>') and copy images/<class dir>/<file> to DIR/train|test/<class dir>/"]),
    ]

    /// The dataset called `name` (case-insensitive), or nil.
    public static func spec(named name: String) -> DatasetSpec? { all.first { $0.name.lowercased() == name.lowercased() } }

    /// The manifest as committed in `Datasets/manifest.json` (pretty-printed, sorted keys).
    public static func manifestJSON() throws -> Data {
        struct Manifest: Encodable { var format = "bottleneck-datasets-1"; var datasets = DatasetCatalog.all }
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var d = try enc.encode(Manifest())
        d.append(0x0A)
        return d
    }
}
