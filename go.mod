module mp3converter

go 1.26
